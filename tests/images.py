"""Test images assembled offline from host binaries.

No image registry is reachable from CI or dev machines, so images are built by
copying host files into a rootfs and piping it to ``docker import``. A build is
skipped when the image comment of the tag already records the
hash of everything that would go into it, so only the first run pays for it.

The rootfs is described declaratively first (``_Rootfs``), hashed, and only
written to a tempdir when the hash is not already built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX_IMAGE = "hostguard-test/busybox:1"
BENCH_IMAGE = "hostguard-test/bench:1"
CONTENT_PREFIX = "hostguard-content:"   # in the image comment: labels would leak into containers

# Bump to rebuild every image when the layout logic changes but the inputs do not.
_BUILDER_VERSION = "1"
_HOST_BUSYBOX = Path("/bin/busybox")
_HOST_NODE = Path("/usr/bin/node")

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
).encode()
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def docker_problem() -> str | None:
    """Why dockerd cannot be used (None if it can): tests skip or fail on this."""
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker CLI unusable: {exc}"
    if result.returncode != 0:
        return f"dockerd unreachable: {result.stderr.strip() or result.stdout.strip()}"
    return None


def ensure_busybox_image() -> str:
    """Build (or reuse) BUSYBOX_IMAGE: static busybox, its applets, a tiny /etc and task files."""
    rootfs = _Rootfs()
    _add_base(rootfs, applets=_busybox_applets())
    rootfs.add_bytes("var/task/hello.txt", b"hello\n")
    rootfs.add_bytes("srv/secret.txt", b"secret\n")
    rootfs.add_dir("usr/local/bin")
    rootfs.add_dir("usr/bin")
    # a second, independent program: exec policies that allow /bin/busybox do not allow it
    rootfs.add_file(_HOST_BUSYBOX, "opt/forbidden/busybox")
    return _ensure(rootfs, BUSYBOX_IMAGE, cmd=["/bin/sh"])


def ensure_bench_image(loops: Path) -> str:
    """Build (or reuse) BENCH_IMAGE: busybox plus the benchmark's static ``loops`` binary."""
    rootfs = _Rootfs()
    _add_base(rootfs, applets=["sh"])
    rootfs.add_file(loops, "opt/bench/loops")
    rootfs.add_bytes("var/task/hello.txt", b"hello\n")
    return _ensure(rootfs, BENCH_IMAGE, cmd=["/opt/bench/loops", "noop"])


def ensure_node_image(app_dir: Path, tag: str) -> str:
    """Build (or reuse) ``tag``: the host's node, its shared libraries and ``app_dir`` at /var/task.

    node goes to /usr/local/bin/node and /usr/bin/node as two independent
    copies (distinct inodes), so exec policies can allow one path and deny the
    other even though the bytes are identical.
    """
    app_dir = Path(app_dir).resolve()
    if not (app_dir / "node_modules").is_dir():
        raise RuntimeError(f"{app_dir}/node_modules is missing: run `npm ci --omit=dev` in {app_dir} first")
    rootfs = _Rootfs()
    _add_base(rootfs, applets=["sh"])  # a shell for debugging, nothing else to exec
    rootfs.add_file(_HOST_NODE, "usr/local/bin/node")
    rootfs.add_file(_HOST_NODE, "usr/bin/node")
    for lib in _shared_libraries(_HOST_NODE):
        rootfs.add_file(lib, str(lib).lstrip("/"))
    certs = Path("/etc/ssl/certs")
    if certs.is_dir():
        rootfs.add_tree(certs, "etc/ssl/certs", follow_symlinks=True)  # they point into /usr/share
    rootfs.add_tree(app_dir, "var/task")
    return _ensure(rootfs, tag, cmd=["/usr/local/bin/node", "/var/task/index.js"], workdir="/var/task")


def _busybox_applets() -> list[str]:
    """The applets the host's busybox was built with."""
    _check_busybox()
    return subprocess.run(
        [str(_HOST_BUSYBOX), "--list"], capture_output=True, text=True, check=True,
    ).stdout.split()


def _check_busybox() -> None:
    """A dynamic busybox would need the host's libc in every image: insist on the static one."""
    if not _is_static_elf(_HOST_BUSYBOX):
        raise RuntimeError(
            f"{_HOST_BUSYBOX} is missing or not statically linked; "
            "install the Debian package busybox-static (apt-get install busybox-static)"
        )


def _add_base(rootfs: _Rootfs, applets: list[str]) -> None:
    """What every test image has: busybox with ``applets`` as symlinks, /etc/passwd and group, /tmp."""
    _check_busybox()
    rootfs.add_file(_HOST_BUSYBOX, "bin/busybox")
    for applet in applets:
        if applet != "busybox":
            rootfs.add_symlink(f"bin/{applet}", "busybox")
    rootfs.add_bytes("etc/passwd", _PASSWD)
    rootfs.add_bytes("etc/group", _GROUP)
    rootfs.add_dir("tmp", 0o1777)


def _is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF64 executable without a PT_INTERP (dynamic loader) header."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if header[:5] != b"\x7fELF\x02" or header[5] != 1:  # ELF64, little-endian
                return False
            phoff, = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _shared_libraries(binary: Path) -> list[Path]:
    """Every library ``ldd`` resolves for ``binary``, plus the dynamic loader, at their host paths."""
    output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in output.splitlines():
        words = line.split()
        if "=>" in words:  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
            target = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):  # "/lib64/ld-linux-x86-64.so.2 (0x...)"
            target = words[0]
        else:  # linux-vdso.so.1 lives in the kernel
            continue
        if target.startswith("/"):
            libraries.append(Path(target))
    return libraries


@dataclass
class _Rootfs:
    """A rootfs as data: destination path -> what to put there.

    Kept declarative so the content hash can be computed without copying
    ~100 MB of node, which is what makes the cached path fast.
    """

    entries: dict[str, tuple] = field(default_factory=dict)

    def add_dir(self, dest: str, mode: int = 0o755) -> None:
        self._add(dest, ("dir", mode))

    def add_bytes(self, dest: str, data: bytes, mode: int = 0o644) -> None:
        self._add(dest, ("bytes", data, mode))

    def add_file(self, src: Path, dest: str) -> None:
        """Copy ``src`` (symlinks followed) keeping its permission bits."""
        self._add(dest, ("file", Path(src).resolve(), stat.S_IMODE(os.stat(src).st_mode)))

    def add_symlink(self, dest: str, target: str) -> None:
        self._add(dest, ("symlink", target))

    def _add(self, dest: str, entry: tuple) -> None:
        # Parents become explicit 0755 entries so the host's umask cannot leak into the image.
        for parent in Path(dest).parents[:-1]:
            self.entries.setdefault(str(parent), ("dir", 0o755))
        self.entries[dest] = entry

    def add_tree(self, src: Path, dest: str, follow_symlinks: bool = False) -> None:
        """Copy a directory; symlinks stay symlinks unless ``follow_symlinks``."""
        self.add_dir(dest, stat.S_IMODE(src.stat().st_mode))
        for dirpath, dirnames, filenames in os.walk(src, followlinks=follow_symlinks):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath, name)
                target = f"{dest}/{path.relative_to(src)}"
                if path.is_symlink() and not follow_symlinks:
                    self.add_symlink(target, os.readlink(path))
                elif path.is_dir():
                    self.add_dir(target, stat.S_IMODE(path.stat().st_mode))
                elif path.exists():  # skips dangling symlinks when following
                    self.add_file(path, target)

    def digest(self, changes: list[str]) -> str:
        """sha256 over the layout, file contents and image config."""
        h = hashlib.sha256(f"builder {_BUILDER_VERSION}\n".encode())
        h.update(json.dumps(changes).encode())
        content_hashes: dict[Path, str] = {}
        for dest in sorted(self.entries):
            kind, *args = self.entries[dest]
            if kind == "file":
                src, mode = args
                if src not in content_hashes:
                    with open(src, "rb") as f:
                        content_hashes[src] = hashlib.file_digest(f, "sha256").hexdigest()
                args = [content_hashes[src], mode]
            elif kind == "bytes":
                args = [hashlib.sha256(args[0]).hexdigest(), args[1]]
            h.update(json.dumps([dest, kind, *args]).encode() + b"\n")
        return h.hexdigest()

    def write(self, root: Path) -> None:
        """Materialize under ``root``; sorting puts every directory before its contents."""
        root.chmod(0o755)  # becomes the container's "/"; mkdtemp made it 0700
        for dest in sorted(self.entries):
            kind, *args = self.entries[dest]
            path = root / dest
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir(exist_ok=True)
            elif kind == "bytes":
                path.write_bytes(args[0])
            elif kind == "file":
                shutil.copyfile(args[0], path)
            elif kind == "symlink":
                path.symlink_to(args[0])
            if kind != "symlink":
                path.chmod(args[-1])  # after creation: mkdir/open apply the umask


def _ensure(rootfs: _Rootfs, tag: str, cmd: list[str], workdir: str | None = None) -> str:
    """Import ``rootfs`` as ``tag`` unless the tag already holds exactly this content."""
    changes = [f"CMD {json.dumps(cmd)}"] + ([f"WORKDIR {workdir}"] if workdir else [])
    content = rootfs.digest(changes)
    previous_id, previous_content = _inspect(tag)
    if previous_content == content:
        return tag
    with tempfile.TemporaryDirectory(prefix="hostguard-rootfs-") as tmp:
        root = Path(tmp)
        rootfs.write(root)
        args = ["docker", "import", "--message", f"{CONTENT_PREFIX}{content}"]
        for change in changes:
            args += ["--change", change]
        # --numeric-owner/--owner/--group: everything in the image belongs to root
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0", "-c", "."],
            stdout=subprocess.PIPE,
        )
        try:
            imported = subprocess.run(args + ["-", tag], stdin=tar.stdout, capture_output=True, text=True)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar_rc = tar.wait()
    if tar_rc != 0 or imported.returncode != 0:
        raise RuntimeError(f"building {tag} failed (tar exit {tar_rc}): {imported.stderr.strip()}")
    if previous_id and previous_id != imported.stdout.strip():
        # The outdated image is now untagged; drop it unless a container still uses it.
        subprocess.run(["docker", "image", "rm", previous_id], capture_output=True)
    return tag


def _inspect(tag: str) -> tuple[str | None, str | None]:
    """(image id, content hash) of ``tag``; (None, None) if the tag does not exist."""
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{.Comment}}", tag],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None, None
    image_id, _, comment = result.stdout.strip().partition(" ")
    return image_id, comment.removeprefix(CONTENT_PREFIX) if comment.startswith(CONTENT_PREFIX) else None
