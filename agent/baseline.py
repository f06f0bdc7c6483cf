"""The baseline every policy includes unless it says `baseline: false`.

Why: an ordinary dynamically linked program touches a handful of files before its own code runs
(the loader's cache and shared libraries) and while it runs (/dev/null, randomness, its own limits
under /proc/self and the cgroup files). Without these, every policy would have to repeat them and a
typo would kill the program at start. The list was measured on glibc programs, node 20 and busybox
(strace of their start-up); it grants reads of system code and process metadata, never writes
outside /dev/null, and nothing under /etc beyond name-service and loader configuration.

Also: every program a policy may exec may be read (node maps its own binary, shells read scripts
they run), which compiler.compile_policy adds per policy.
"""

from __future__ import annotations

from .policy import Access, FileRule

__all__ = ["EXEC", "FILES"]

_READ = Access.READ
_READ_WRITE = Access.READ | Access.WRITE

EXEC: tuple[str, ...] = ()
"""No program is allowed by default: the entrypoint must be named by the policy."""

FILES: tuple[FileRule, ...] = (
    # the dynamic loader and shared libraries
    FileRule("/etc/ld.so.cache", _READ),
    FileRule("/etc/ld.so.preload", _READ),
    FileRule("/lib/", _READ),
    FileRule("/lib64/", _READ),
    FileRule("/usr/lib/", _READ),
    FileRule("/usr/lib64/", _READ),
    FileRule("/usr/local/lib/", _READ),
    # name service, users and time: what libc reads on its own
    FileRule("/etc/nsswitch.conf", _READ),
    FileRule("/etc/host.conf", _READ),
    FileRule("/etc/gai.conf", _READ),
    FileRule("/etc/hosts", _READ),
    FileRule("/etc/resolv.conf", _READ),
    FileRule("/etc/passwd", _READ),
    FileRule("/etc/group", _READ),
    FileRule("/etc/localtime", _READ),
    FileRule("/usr/share/zoneinfo/", _READ),
    # devices every runtime expects
    FileRule("/dev/null", _READ_WRITE),
    FileRule("/dev/zero", _READ),
    FileRule("/dev/urandom", _READ),
    FileRule("/dev/random", _READ),
    # the process's own metadata and limits
    FileRule("/proc/self/", _READ),
    FileRule("/proc/meminfo", _READ),
    FileRule("/proc/cpuinfo", _READ),
    FileRule("/proc/stat", _READ),
    FileRule("/proc/sys/vm/overcommit_memory", _READ),
    FileRule("/sys/devices/system/cpu/", _READ),
    FileRule("/sys/fs/cgroup/", _READ),
)
