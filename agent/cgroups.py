"""Where the unified cgroup hierarchy is and how its directories map to the ids BPF sees.

bpf_get_current_cgroup_id() reports the cgroup2 (unified) hierarchy, whether the host runs pure
cgroup2 (/sys/fs/cgroup) or hybrid (/sys/fs/cgroup/unified). A cgroup2 directory's inode number is
its kernfs id, which is that cgroup id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cgroup_id", "find_unified_mount", "subtree"]


def find_unified_mount(mountinfo: str = "/proc/self/mountinfo") -> Path:
    """The mount point of the cgroup2 hierarchy; OSError when there is none."""
    with open(mountinfo, encoding="utf-8") as lines:
        for line in lines:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == "cgroup2":
                return Path(before.split(" ")[4])
    raise OSError("no cgroup2 hierarchy is mounted: hostguard needs cgroup2 (unified or hybrid)")


def cgroup_id(directory: str | os.PathLike[str]) -> int:
    """The id bpf_get_current_cgroup_id() returns for tasks in this cgroup2 directory."""
    return os.stat(directory).st_ino


def subtree(directory: Path) -> Iterator[Path]:
    """The directory and every cgroup below it (a container may have made its own)."""
    if not directory.is_dir():
        return
    for root, _dirs, _files in os.walk(directory):
        yield Path(root)
