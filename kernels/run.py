#!/usr/bin/env python3
"""The kernel matrix: the agent's exec, file and network cases on Debian's kernels under QEMU and on this
host's kernel, side by side.

    sudo python3 kernels/run.py [--kernel 6.1] [--kernel 6.12] [--no-host] [--accel auto|tcg|kvm] [-v]

For every guest kernel (default: the newest Debian linux-image-6.1.0-N-amd64 and 6.12.N+deb12-amd64)
it downloads the package with `apt-get download` (cached in build/kernels/), boots its vmlinuz under
QEMU with one initramfs that holds busybox, Debian's python3.11 with the agent's dependencies, libbpf,
the agent, its BPF objects and kernels/guest.py, and collects the guest's CASE lines from its second
serial port. The same guest.py runs on the host kernel with the host's agent. It prints one table
(kernel x case: path used, verdict, expected, ok) and exits 1 when any case got another verdict or a
kernel did not boot or run, 3 when it cannot be set up (a package not installable or downloadable).

Standard library only. Needs root (the host run, apt-get), Debian's packages (installed when missing):
qemu-system-x86, busybox-static, python3.11, libbpf1, and the BPF toolchain for `make -C bpf`.
kernels/README.md has what it proves and the measured times.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "kernels"
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest.py"
MULTIARCH = "x86_64-linux-gnu"
PYTHON = "/usr/bin/python3.11"
PYLIB = Path("/usr/lib/python3.11")
BUSYBOX = "/bin/busybox"

SERIES = {   # --kernel SERIES -> the Debian package names of that series (newest wins)
    "6.1": r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    "6.12": r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
}
REQUIRED_CONFIG = ("CONFIG_BPF_LSM=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_BPF_SYSCALL=y", "CONFIG_CGROUP_BPF=y",
                   "CONFIG_FTRACE_SYSCALLS=y", "CONFIG_BLK_DEV_INITRD=y", "CONFIG_RD_GZIP=y")
APPEND = "console=ttyS0 lsm=lockdown,capability,landlock,yama,apparmor,bpf panic=-1 quiet"

# Left out of the guest's Python: test suites, GUI and packaging tools, and extension modules whose
# libraries the agent never needs (OpenSSL, ncurses, sqlite, Berkeley DB, Kerberos).
STDLIB_SKIP_DIRS = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils",
                    "unittest", "venv", "sqlite3", "curses", "dbm", "site-packages", "dist-packages", "xmlrpc",
                    "wsgiref", f"config-3.11-{MULTIARCH}", "__pycache__", "__phello__"}
STDLIB_SKIP_FILES = {"turtle.py", "antigravity.py", "this.py", "pydoc.py", "doctest.py", "_pydecimal.py",
                     "EXTERNALLY-MANAGED", "LICENSE.txt"}
DYNLOAD_SKIP = re.compile(r"^(_test|_ctypes_test|_xx|xx|_ssl|_hashlib|_sqlite3|_curses|_dbm|_gdbm|nis|"
                          r"readline|ossaudiodev|_tkinter|_crypt|_codecs_|_multibytecodec|audioop)")
DEFAULT_KERNELS = ("6.1", "6.12")
SETUP_FAILED = 3
"""Exit status when what the matrix needs cannot be had (a package not installable, no kernel package):
tests/test_kernels.py skips on that outside CI and fails under CI=true."""
SITE_PACKAGES = ("yaml", "structlog")
SITE_SKIP = re.compile(r"^_yaml\.cpython-.*\.so$")   # libyaml's binding: the agent uses the pure-Python SafeLoader

# What the guest's Python imports, found by importing it on the host with the same interpreter: the
# stdlib modules among them get Debian's bytecode in the initramfs (the rest is compiled if ever imported).
IMPORT_PROBE = """
import importlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2], sys.argv[3]]
import guest
for name in sys.argv[4:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
ip link set lo up
echo "GUEST kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm) uptime=$(cut -d' ' -f1 /proc/uptime)"
/usr/bin/python3.11 /opt/hostguard/kernels/guest.py --python /usr/bin/python3.11 --agent-root /opt/hostguard \\
    --bpf-dir /opt/hostguard/build/bpf --results /dev/ttyS1 {guest_args}
echo "GUEST_DONE rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class SetupFailed(Exception):
    """Something the matrix needs is not there and could not be installed or downloaded."""


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


# --- packages ---------------------------------------------------------------------------------------
_APT_UPDATED = False


def apt_update() -> None:
    global _APT_UPDATED
    if not _APT_UPDATED:
        say("apt-get update")
        try:
            run("apt-get", "update", "-qq")
        except (OSError, subprocess.CalledProcessError) as error:
            raise SetupFailed(f"apt-get update failed: {error}") from error
        _APT_UPDATED = True


def ensure_packages() -> None:
    """Debian's packages this needs, installed when a file they provide is missing."""
    wanted = {
        "qemu-system-x86": shutil.which("qemu-system-x86_64"),
        "busybox-static": os.path.exists(BUSYBOX) and is_static(BUSYBOX),
        "python3.11": os.path.exists(PYTHON),
        "libpython3.11-stdlib": (PYLIB / "json" / "__init__.py").exists(),
        "libbpf1": any(Path(f"/usr/lib/{MULTIARCH}").glob("libbpf.so.1*")),
    }
    missing = [pkg for pkg, present in wanted.items() if not present]
    if not missing:
        return
    say(f"installing {' '.join(missing)}")
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            apt_update()
            run(*command, env=env, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SetupFailed(f"cannot install {' '.join(missing)}: {error}") from error


def is_static(path: str) -> bool:
    """No PT_INTERP program header: the ELF needs no dynamic loader."""
    with open(path, "rb") as elf:
        header = elf.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return False
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    return all(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") != 3 for i in range(phnum))


# --- guest kernels --------------------------------------------------------------------------------
@dataclass
class Kernel:
    package: str
    vmlinuz: Path
    config: dict[str, str]
    release: str


def kernel_package(spec: str) -> str:
    """A series ("6.1") becomes its newest package; a package name stays itself."""
    if spec not in SERIES:
        return spec
    pattern = SERIES[spec]
    for attempt in (1, 2):
        found = subprocess.run(["apt-cache", "search", "--names-only", pattern], capture_output=True,
                               text=True, check=True).stdout.split("\n")
        names = [line.split(" ", 1)[0] for line in found if line.strip()]
        if not names:   # offline, or no package lists: what an earlier run downloaded
            names = [deb.name.split("_", 1)[0] for deb in BUILD.glob("debs/linux-image-*.deb")
                     if re.match(pattern, deb.name.split("_", 1)[0])]
        if names:
            return max(names, key=lambda name: [int(n) for n in re.findall(r"\d+", name)])
        if attempt == 1:
            apt_update()
    raise SetupFailed(f"no package matches {pattern} (apt-cache search, build/kernels/debs)")


def fetch_kernel(package: str) -> Kernel:
    """Download (not install) the package, unpack its /boot, check the kernel config."""
    debs = BUILD / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
    if deb is None:
        say(f"apt-get download {package}")
        with tempfile.TemporaryDirectory(dir=debs) as partial:
            os.chmod(partial, 0o755)     # apt's _apt user writes the download here
            download = ["apt-get", "download", "-q", package]
            try:
                if subprocess.run(download, cwd=partial, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode != 0:
                    apt_update()
                    run(*download, cwd=partial, stdout=subprocess.DEVNULL)
            except subprocess.CalledProcessError as error:
                raise SetupFailed(f"apt-get download {package} failed ({error})") from error
            for got in Path(partial).glob("*.deb"):
                got.rename(debs / got.name)
        deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))))
    where = BUILD / package
    vmlinuz, config_file = where / "vmlinuz", where / "config"
    if not (vmlinuz.exists() and config_file.exists()) or vmlinuz.stat().st_mtime < deb.stat().st_mtime:
        where.mkdir(parents=True, exist_ok=True)
        say(f"unpacking /boot of {deb.name}")
        tar_stream = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=tar_stream.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                target = vmlinuz if name.startswith("boot/vmlinuz-") else \
                    config_file if name.startswith("boot/config-") else None
                if target is not None and member.isfile():
                    target.write_bytes(tar.extractfile(member).read())
        tar_stream.wait()
        if not vmlinuz.exists() or not config_file.exists():
            raise SystemExit(f"run.py: {deb} has no /boot/vmlinuz-* or /boot/config-*")
    config = {}
    for line in config_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            config[key] = value
    missing = [want for want in REQUIRED_CONFIG if f"{want.split('=')[0]}={config.get(want.split('=')[0])}" != want]
    if missing:
        raise SystemExit(f"run.py: {package} lacks {', '.join(missing)}")
    release = package.removeprefix("linux-image-")
    return Kernel(package, vmlinuz, config, release)


# --- the initramfs --------------------------------------------------------------------------------
class Cpio:
    """A newc ("070701") cpio archive built in memory: parents before children, no root needed."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes | Path | None, int, int]] = {}  # path -> mode, data, mtime, rdev

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = (stat.S_IFDIR | 0o755, None, 0, 0)

    def directory(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries.setdefault(path.strip("/"), (stat.S_IFDIR | mode, None, 0, 0))

    def data(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (stat.S_IFREG | mode, content, 0, 0)

    def file(self, path: str, source: Path, mode: int | None = None) -> None:
        info = source.stat()
        self._parents(path)
        self.entries[path.strip("/")] = (stat.S_IFREG | (mode if mode is not None else info.st_mode & 0o7777),
                                         source, int(info.st_mtime), 0)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (stat.S_IFLNK | 0o777, target.encode(), 0, 0)

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (stat.S_IFCHR | mode, None, 0, os.makedev(major, minor))

    def host_file(self, source: str | Path) -> None:
        """A host file at its own path: symlinks are kept as symlinks and their targets added too."""
        source = Path(source)
        real_parent = Path(os.path.realpath(source.parent))   # /lib -> /usr/lib (merged /usr)
        path = real_parent / source.name
        if str(path).strip("/") in self.entries:
            return
        if path.is_symlink():
            target = os.readlink(path)
            self.symlink(str(path), target)
            self.host_file(real_parent / target if not os.path.isabs(target) else target)
        else:
            self.file(str(path), path)

    def write(self, out: io.BufferedIOBase) -> int:
        size = 0

        def put(chunk: bytes) -> None:
            nonlocal size
            out.write(chunk)
            size += len(chunk)

        def entry(ino: int, name: str, mode: int, body: bytes, mtime: int, rdev: int) -> None:
            encoded = name.encode() + b"\0"
            fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, mtime, len(body), 0, 0,
                      os.major(rdev), os.minor(rdev), len(encoded), 0)
            header = b"070701" + b"".join(b"%08X" % value for value in fields)
            put(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
            put(body + b"\0" * (-len(body) % 4))

        for ino, (name, (mode, content, mtime, rdev)) in enumerate(self.entries.items(), start=1):
            body = content.read_bytes() if isinstance(content, Path) else (content or b"")
            entry(ino, name, mode, body, mtime, rdev)
        entry(0, "TRAILER!!!", 0, b"", 0, 0)
        return size


def ldd(path: str | Path) -> list[str]:
    """The shared libraries (and loader) a dynamically linked ELF loads, as host paths."""
    done = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    found = []
    for line in done.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(match.group(1))
    return found


def stdlib_files() -> list[Path]:
    files = []
    for root, dirs, names in os.walk(PYLIB):
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS and d != "tests")
        for name in sorted(names):
            path = Path(root) / name
            if Path(root) == PYLIB and name in STDLIB_SKIP_FILES:
                continue
            if name.endswith((".pyc", ".exe", ".whl")):
                continue
            if Path(root).name == "lib-dynload" and DYNLOAD_SKIP.match(name):
                continue
            files.append(path)
    return files


def imported_stdlib(site: Path) -> list[Path]:
    """The stdlib .py files that guest.py and every agent module import (on the host, same python3.11)."""
    modules = [f"agent.{path.stem}" for path in sorted((REPO / "agent").glob("*.py")) if path.stem != "__main__"]
    done = subprocess.run([PYTHON, "-c", IMPORT_PROBE, str(GUEST_SCRIPT.parent), str(REPO), str(site), *modules],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    if done.returncode != 0:
        say(f"could not list the guest's imports (no bytecode shipped): {done.stderr.strip()[-300:]}")
        return []
    return [Path(name) for name in json.loads(done.stdout) if name.startswith(f"{PYLIB}/") and name.endswith(".py")]


def site_packages_root() -> Path:
    """Where the agent's pinned dependencies are: the repo's .venv, else Debian's dist-packages."""
    for candidate in sorted((REPO / ".venv" / "lib").glob("python3.11/site-packages")):
        if all((candidate / name).exists() for name in ("yaml", "structlog")):
            return candidate
    debian = Path("/usr/lib/python3/dist-packages")
    if all((debian / name).exists() for name in ("yaml", "structlog")):
        return debian
    raise SystemExit("run.py: PyYAML and structlog not found: run ./dev.sh once (it creates .venv), or "
                     "apt-get install python3-yaml python3-structlog")


def build_initramfs(out: Path, guest_args: str, pyc: bool, object_dir: Path) -> dict:
    """busybox + python3.11 (stdlib, PyYAML, structlog) + libbpf + the agent + its objects + guest.py."""
    started = time.monotonic()
    cpio = Cpio()
    for directory in ("proc", "sys", "dev", "tmp", "run", "root", "etc", "sbin", "usr/bin",
                      f"usr/lib/{MULTIARCH}", "usr/lib64"):
        cpio.directory(directory)
    cpio.chardev("dev/console", 5, 1)
    cpio.symlink("lib", "usr/lib")            # merged /usr, as on the host
    cpio.symlink("lib64", "usr/lib64")
    cpio.file("bin/busybox", Path(BUSYBOX).resolve(), 0o755)
    cpio.data("init", INIT.format(guest_args=guest_args).encode(), 0o755)
    cpio.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.data("etc/group", b"root:x:0:\n")
    cpio.data("etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n")
    cpio.data("etc/ld.so.conf", f"/usr/lib/{MULTIARCH}\n".encode())

    # python3.11, its stdlib and the libraries of the interpreter and of every extension module shipped
    cpio.host_file(PYTHON)
    cpio.symlink("usr/bin/python3", "python3.11")
    elves = [Path(PYTHON)]
    for path in stdlib_files():
        if path.is_symlink():      # sitecustomize.py -> /etc/python3.11/sitecustomize.py
            cpio.host_file(path)
            continue
        cpio.file(str(path), path)
        if path.suffix == ".so":
            elves.append(path)
    site = site_packages_root()
    pyc_count = 0
    if pyc:                        # Debian's own bytecode of the stdlib modules used (checked by source mtime)
        for path in imported_stdlib(site):
            cached = path.parent / "__pycache__" / f"{path.stem}.cpython-311.pyc"
            if cached.exists() and f"{path}".strip("/") in cpio.entries:
                cpio.file(str(cached), cached)
                pyc_count += 1
    for name in SITE_PACKAGES:
        for root, dirs, names in os.walk(site / name):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for file_name in names:
                if SITE_SKIP.match(file_name):
                    continue
                source = Path(root) / file_name
                relative = source.relative_to(site)
                cpio.file(f"usr/lib/python3/dist-packages/{relative}", source)
                if source.suffix == ".so":
                    elves.append(source)
    libbpf = Path(f"/usr/lib/{MULTIARCH}/libbpf.so.1")
    elves.append(libbpf)
    cpio.host_file(libbpf)
    for elf in elves:
        for library in ldd(elf):
            cpio.host_file(library)

    # the agent, its objects and the cases (sources only: the agent runs with PYTHONDONTWRITEBYTECODE)
    for source in sorted((REPO / "agent").glob("*.py")):
        cpio.file(f"opt/hostguard/agent/{source.name}", source)
    objects = sorted(object_dir.glob("*.bpf.o"))
    for source in objects:
        cpio.file(f"opt/hostguard/build/bpf/{source.name}", source)
    cpio.file("opt/hostguard/kernels/guest.py", GUEST_SCRIPT)

    # /etc/ld.so.cache for the guest's tree (ctypes.util.find_library("c") asks `ldconfig -p`)
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if os.path.exists(ldconfig) and is_static(ldconfig):
        cpio.file("sbin/ldconfig", Path(ldconfig), 0o755)
        with tempfile.TemporaryDirectory() as root:
            libdir = Path(root) / "usr" / "lib" / MULTIARCH
            libdir.mkdir(parents=True)
            (Path(root) / "etc").mkdir()
            (Path(root) / "etc" / "ld.so.conf").write_text(f"/usr/lib/{MULTIARCH}\n")
            for name, (mode, content, _, _) in cpio.entries.items():
                if name.startswith(f"usr/lib/{MULTIARCH}/") and "/" not in name.removeprefix(f"usr/lib/{MULTIARCH}/"):
                    if stat.S_ISLNK(mode):
                        os.symlink(content.decode(), libdir / Path(name).name)
                    elif isinstance(content, Path):
                        shutil.copy(content, libdir / Path(name).name)
            run(ldconfig, "-X", "-r", root)
            cpio.data("etc/ld.so.cache", (Path(root) / "etc" / "ld.so.cache").read_bytes())

    raw = io.BytesIO()
    uncompressed = cpio.write(raw)
    with open(out, "wb") as compressed:
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as packed:
            packed.write(raw.getvalue())
    return {"files": len(cpio.entries), "uncompressed": uncompressed, "size": out.stat().st_size,
            "objects": len(objects), "pyc": pyc_count, "seconds": round(time.monotonic() - started, 1)}


# --- running the cases ----------------------------------------------------------------------------
@dataclass
class Run:
    label: str                  # kernel release (+ where)
    where: str                  # qemu/tcg, qemu/kvm, host
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    log: Path | None = None

    def records(self, kind: str) -> list[dict]:
        found = []
        for line in self.lines:
            if line.startswith(kind + " "):
                body = line[len(kind) + 1:]
                if body.startswith("{"):
                    try:
                        found.append(json.loads(body))
                    except ValueError:
                        pass
                    continue
                try:
                    found.append(dict(part.split("=", 1) for part in shlex.split(body) if "=" in part))
                except ValueError:
                    pass
        return found


ACCEL_OPTIONS = {"tcg": "tcg,thread=single"}
"""Single-threaded TCG: with one host thread per vCPU (MTTCG, QEMU 7.2's default) Debian's 6.12 kernel
sometimes dies at boot with `Oops: int3` in run_timer_softirq -- the kernel patches its own text
(static keys, int3 + text_poke) while another vCPU runs it, which MTTCG does not keep coherent. One
thread still emulates -smp 2 (per-CPU maps stay per-CPU); it costs ~1 s per boot here."""


def pick_accel(requested: str) -> str:
    if requested != "auto":
        return requested
    # /dev/kvm on these development machines is kvm_pvm, a software nested-virtualisation module that
    # boots ordinary kernels too slowly to be useful: plain TCG is faster there.
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists():
        return "kvm"
    return "tcg"


def boot(kernel: Kernel, initrd: Path, accel: str, timeout: float, memory: int, cpus: int, verbose: bool) -> Run:
    result = Run(kernel.release, f"qemu/{accel}")
    results_file = BUILD / f"{kernel.release}.results"
    console_file = BUILD / f"{kernel.release}.console.log"
    results_file.unlink(missing_ok=True)
    command = ["qemu-system-x86_64", "-accel", ACCEL_OPTIONS.get(accel, accel), "-m", str(memory), "-smp", str(cpus),
               "-nographic", "-no-reboot", "-serial", "mon:stdio", "-serial", f"file:{results_file}",
               "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", APPEND]
    if accel == "kvm":
        command[3:3] = ["-cpu", "host"]
    say(f"booting {kernel.release} ({accel}): {shlex.join(command)}")
    started = time.monotonic()
    with open(console_file, "wb") as console:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        deadline = started + timeout
        os.set_blocking(process.stdout.fileno(), False)
        pending = b""
        while True:
            chunk = process.stdout.read(65536)
            if chunk:
                console.write(chunk)
                console.flush()
                if verbose:
                    pending += chunk
                    *whole, pending = pending.split(b"\n")
                    for line in whole:
                        print(f"  [{kernel.release}] {line.decode(errors='replace').rstrip()}", flush=True)
            elif process.poll() is not None:
                break
            else:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                result.error = f"timeout: no power-off within {timeout:.0f}s"
                break
    result.seconds = round(time.monotonic() - started, 1)
    result.log = console_file
    text = results_file.read_text(errors="replace") if results_file.exists() else ""
    if not text.strip():     # no second serial port output: fall back to the console
        text = console_file.read_text(errors="replace")
    result.lines = [line.strip("\r") for line in text.replace("\r\n", "\n").split("\n")]
    console_text = console_file.read_text(errors="replace")
    if not result.error and "GUEST_DONE" not in console_text:
        tail = [line for line in console_text.replace("\r", "").splitlines() if line.strip()][-5:]
        result.error = "the guest did not finish: " + " | ".join(tail)
    return result


def host_run(python: str, object_dir: Path, lock_wait: float, verbose: bool) -> Run:
    """guest.py on this host's kernel with the host's agent (root; waits while another agent holds the lock)."""
    tracing = Path("/sys/kernel/tracing")
    if not (tracing / "events").exists():
        run("mount", "-t", "tracefs", "tracefs", str(tracing))   # as dev.sh does
    result = Run(os.uname().release, "host")
    command = [sys.executable, str(GUEST_SCRIPT), "--python", python, "--agent-root", str(REPO),
               "--bpf-dir", str(object_dir), "--busybox", BUSYBOX, "--lock-wait", str(lock_wait)]
    say(f"host kernel {result.label}: {shlex.join(command)}")
    started = time.monotonic()
    # stderr passes through: "waiting for the host lock" is worth seeing live
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=lock_wait + 600)
    result.seconds = round(time.monotonic() - started, 1)
    result.lines = done.stdout.splitlines()
    result.log = BUILD / "host.log"
    result.log.write_text(done.stdout)
    if verbose:
        for line in done.stdout.splitlines():
            print(f"  [host] {line}", flush=True)
    if done.returncode not in (0, 1, 2):    # 2: the agent did not start (AGENT_FAILED says why)
        result.error = f"guest.py exited with {done.returncode} (see its messages above)"
    return result


# --- the table ------------------------------------------------------------------------------------
def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


STOPPED = {"killed", "EPERM"}


def _paths_agree(runs: list[Run]) -> bool:
    """Issue 4's "same verdicts": every case is stopped on every kernel or on none, whichever path
    (tracepoint or LSM) the kernel's agent uses; and where the LSM path refused a write with O_TRUNC,
    the file is untouched."""
    verdicts: dict[str, dict[str, str]] = {}
    ok = True
    for result in runs:
        for case in result.records("CASE"):
            stopped = "stopped" if case.get("got") in STOPPED else "allowed"
            verdicts.setdefault(case.get("name", "?"), {})[f"{result.label} ({case.get('path')})"] = stopped
            if case.get("path") == "lsm" and case.get("name") == "forbidden-write" and case.get("content") != "survived":
                print(f"{result.label}: the LSM path refused the O_TRUNC open, yet the file did not survive")
                ok = False
    for name, by_kernel in sorted(verdicts.items()):
        if len(set(by_kernel.values())) > 1:
            print(f"paths disagree on {name}: {by_kernel}")
            ok = False
    print(f"\ntracepoint and LSM paths agree on all {len(verdicts)} cases: {'yes' if ok else 'NO'}")
    return ok


def report(runs: list[Run], facts: dict) -> bool:
    """Print the matrix; True when every kernel ran and every case passed."""
    all_ok = True
    rows = [["kernel", "where", "case", "kind", "tagged", "path", "expected", "got", "log", "content", "ok"]]
    summary = [["kernel", "where", "boot+test", "agent ready", "cases", "lsm probe", "fentry probe", "active LSMs",
                "result"]]
    waited = []
    for result in runs:
        cases = result.records("CASE")
        ready = (result.records("AGENT_READY") or [{}])[0]
        kernel = (result.records("KERNEL") or [{}])[0]
        timing = (result.records("TIMING") or [{}])[0]
        outcome = (result.records("RESULT") or [{}])[0]
        failed = (result.records("AGENT_FAILED") or [{}])[0]
        agent_exit = (result.records("AGENT_EXIT") or [{}])[0]
        error = result.error or (f"agent failed: {failed.get('error')}: {failed.get('cause')}" if failed else "")
        if not error and agent_exit and agent_exit.get("rc") != "0":
            error = f"the agent exited with {agent_exit.get('rc')} when stopped"
        if not error and not cases:
            error = "no CASE lines"
        if not error and outcome.get("failed") is None:
            error = "no RESULT line"
        passed = not error and all(case.get("ok") == "yes" for case in cases)
        all_ok &= passed
        for case in cases:
            rows.append([result.label, result.where, case.get("name", "?"), case.get("kind", "?"),
                         case.get("tagged", "?"), case.get("path", "?"), case.get("expected", "?"),
                         case.get("got", "?"), case.get("log", "?"), case.get("content", "-"),
                         "ok" if case.get("ok") == "yes" else "FAIL"])
        if float(timing.get("lock_wait_s") or 0):
            waited.append(f"{result.label}: waited {timing['lock_wait_s']} s for another agent's host lock")
        summary.append([result.label, result.where, f"{result.seconds:.1f} s",
                        f"{timing['agent_ready_s']} s" if timing.get("agent_ready_s") else "-",
                        f"{outcome['cases_s']} s" if outcome.get("cases_s") else "-",
                        str(ready.get("lsm", "-")), str(ready.get("fentry", "-")), kernel.get("lsm", "-"),
                        "ok" if passed else f"FAIL {error}".strip()])
        if error:
            print(f"\n{result.label} ({result.where}): {error}" + (f" (log: {result.log})" if result.log else ""))
        for line in result.records("AGENT_LOG"):
            print(f"{result.label}: agent {line.get('level')}: {line.get('event')} "
                  f"{ {k: v for k, v in line.items() if k not in ('timestamp', 'level', 'event')} }")
    all_ok &= _paths_agree(runs)
    print()
    print(table(rows))
    print()
    print(table(summary))
    for line in waited:
        print(line)
    print()
    for result in runs:       # what each kernel's agent said it uses (agent_ready)
        for ready in result.records("AGENT_READY"):
            enforcement = ready.get("enforcement") or {}
            print(f"{result.label} agent_ready: " + "; ".join(f"{kind}: {how}" for kind, how in enforcement.items()))
            print(f"{' ' * len(result.label)} hooks: " + "; ".join(
                f"{kind}: {' '.join(hooks)}" for kind, hooks in (ready.get("hooks") or {}).items()))
    for key, value in facts.items():
        print(f"{key}: {value}")
    return all_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", action="append", metavar="SERIES|PACKAGE",
                        help=f"a guest kernel: {' or '.join(SERIES)} (newest of the series) or a "
                             f"linux-image package name; repeatable (default: {' '.join(DEFAULT_KERNELS)})")
    parser.add_argument("--no-host", action="store_true", help="skip the host kernel")
    parser.add_argument("--no-guests", action="store_true", help="only the host kernel")
    parser.add_argument("--accel", choices=("auto", "tcg", "kvm"), default=os.environ.get("HG_ACCEL", "auto"))
    parser.add_argument("--boot-timeout", type=float, default=900.0, help="seconds per guest (default 900)")
    parser.add_argument("--memory", type=int, default=1024, help="guest MiB")
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="guests booted at once (default: one per host CPU under TCG, which runs a "
                             "guest on one thread)")
    parser.add_argument("--lock-wait", type=float, default=900.0,
                        help="seconds the host run waits while another agent holds /run/hostguard.lock")
    parser.add_argument("--bpf-dir", type=Path, metavar="DIR",
                        help="test these *.bpf.o instead of building bpf/ into build/bpf")
    parser.add_argument("--no-pyc", action="store_true", help="ship the guest's stdlib without bytecode")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream the consoles")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run.py: run as root (the host run loads BPF programs; packages may be installed)")

    total_started = time.monotonic()
    BUILD.mkdir(parents=True, exist_ok=True)
    facts: dict[str, str] = {}
    ensure_packages()
    object_dir = args.bpf_dir.resolve() if args.bpf_dir else REPO / "build" / "bpf"
    if not args.bpf_dir:
        say("building the BPF objects (make -s -C bpf)")
        run("make", "-s", "-C", str(REPO / "bpf"))
    if not any(object_dir.glob("*.bpf.o")):
        raise SystemExit(f"run.py: no *.bpf.o in {object_dir}")

    runs: list[Run] = []
    if not args.no_host:
        venv_python = REPO / ".venv" / "bin" / "python"
        python = str(venv_python) if venv_python.exists() else sys.executable
        runs.append(host_run(python, object_dir, args.lock_wait, args.verbose))

    if not args.no_guests:
        kernels = [fetch_kernel(kernel_package(spec)) for spec in (args.kernel or DEFAULT_KERNELS)]
        initrd = BUILD / "initrd.img"
        guest_args = "--ready-timeout 600 --case-timeout 120 --log-wait 20"
        built = build_initramfs(initrd, guest_args, pyc=not args.no_pyc, object_dir=object_dir)
        facts["initramfs"] = (f"{built['size'] / 1e6:.1f} MB gzip ({built['uncompressed'] / 1e6:.1f} MB cpio, "
                              f"{built['files']} entries, {built['objects']} BPF objects, {built['pyc']} stdlib .pyc), built in "
                              f"{built['seconds']} s: {initrd}")
        accel = pick_accel(args.accel)
        jobs = args.jobs or max(1, min(len(kernels), (os.cpu_count() or 1) // (args.cpus if accel == "kvm" else 1)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:   # qemu does the work
            runs += pool.map(lambda k: boot(k, initrd, accel, args.boot_timeout, args.memory, args.cpus,
                                            args.verbose), kernels)
        facts["guests"] = f"{len(kernels)} booted, {jobs} at a time ({ACCEL_OPTIONS.get(accel, accel)})"
    facts["total wall time"] = f"{time.monotonic() - total_started:.1f} s"
    ok = report(runs, facts)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupFailed as failure:
        print(f"run.py: cannot set up the kernel matrix: {failure}", file=sys.stderr)
        sys.exit(SETUP_FAILED)
