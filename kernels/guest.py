"""The kernel-matrix cases: run the real agent on this kernel and judge exec, file and network cases.

The same script runs inside each QEMU guest (started by the initramfs's /init) and on the host (started
by kernels/run.py as root). Standard library only: in the guest it runs on Debian's python3.11 with
nothing else installed.

It creates a cgroup2 directory, starts `python -m agent run --no-docker --cgroup DIR=kcase`, waits for
agent_ready, and then runs each case as a child process that moves itself into that cgroup (writes 0 to
cgroup.procs) and execs a copy of the static busybox: that exec is judged like a container's entrypoint,
the opens and connects after it like container code. Untagged cases do the forbidden things without
moving. Each case prints one machine-readable line:

    CASE kind=file name=forbidden-read tagged=yes path=tracepoint expected=killed got=killed log=killed ...

and the script ends with `AGENT_READY {json}`, `AGENT_EXIT rc=N` and `RESULT ok=N failed=M`.
Exit status: 0 when every case got its expected verdict, 1 otherwise, 2 when the agent did not start.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLICY = "kcase"
LOGGED_ACTION = {"tracepoint": "killed", "lsm": "denied", "cgroup": "denied"}   # path used -> violation's action
KILLED = -signal.SIGKILL
LOCK_BUSY = "another hostguard agent is running"


def emit(out: list, line: str) -> None:
    """A result line: to stdout, and to every extra results channel (the guest's second serial port)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    for channel in out:
        channel.write(line + "\n")
        channel.flush()


def fields(**values: object) -> str:
    return " ".join(f"{key}={shlex.quote(str(value))}" for key, value in values.items())


def unified_cgroup_mount() -> Path:
    with open("/proc/self/mountinfo", encoding="utf-8") as lines:
        for line in lines:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == "cgroup2":
                return Path(before.split(" ")[4])
    raise SystemExit("guest.py: no cgroup2 hierarchy is mounted")


# --- loopback listeners ---------------------------------------------------------------------------
class Listener:
    """127.0.0.1:<free port>; every connection gets b"hello\\n" and is closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(b"hello\n")
                except OSError:
                    pass


# --- the agent --------------------------------------------------------------------------------
class Agent:
    def __init__(self, args: argparse.Namespace, base: Path, cgroup: Path) -> None:
        self.args = args
        self.log_file = base / "agent.log"
        self.stdout_file = base / "agent.stdout"
        resolv = base / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")   # nothing to resolve; never leave loopback
        self.command = [args.python, "-m", "agent", "run", "--policies", str(base / "policies"),
                        "--no-docker", "--cgroup", f"{cgroup}={POLICY}", "--log-file", str(self.log_file),
                        "--bpf-dir", args.bpf_dir, "--resolv-conf", str(resolv)]
        self.process: subprocess.Popen | None = None
        self.lock_wait_s = 0.0

    def lines(self) -> list[dict]:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return []
        parsed = []
        for line in text.splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
        return parsed

    def output(self) -> str:
        try:
            return self.stdout_file.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def start(self) -> dict:
        """agent_ready; waits (bounded by --lock-wait) while another agent holds the host lock."""
        first_attempt = time.monotonic()
        lock_deadline = first_attempt + self.args.lock_wait
        announced = False
        while True:
            self.log_file.unlink(missing_ok=True)
            env = dict(os.environ, PYTHONPATH=self.args.agent_root, PYTHONDONTWRITEBYTECODE="1")
            with open(self.stdout_file, "wb") as stdout:
                self.process = subprocess.Popen(self.command, cwd=self.args.agent_root, env=env,
                                                stdout=stdout, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + self.args.ready_timeout
            while True:
                ready = next((l for l in self.lines() if l.get("event") == "agent_ready"), None)
                if ready is not None:
                    return ready
                if self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"no agent_ready within {self.args.ready_timeout}s\n{self.output()}")
                time.sleep(0.05)
            if LOCK_BUSY in self.output() and time.monotonic() < lock_deadline:
                if not announced:
                    print(f"guest.py: another hostguard agent holds the host lock; waiting up to "
                          f"{self.args.lock_wait:.0f}s", file=sys.stderr, flush=True)
                    announced = True
                time.sleep(1.0)
                self.lock_wait_s = round(time.monotonic() - first_attempt, 1)
                continue
            raise RuntimeError(f"agent exited with {self.process.returncode} before agent_ready\n"
                               f"{self.output()}")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


# --- cases ------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    kind: str                     # exec | file | connect
    tagged: bool
    argv: list[str]
    expected: dict[str, set[str]] # path used -> the verdicts that pass
    want_out: str | None = None   # stdout an "ok" run must contain
    violation: bool = False       # the agent must log a violation for this process (else: none)
    watch_file: Path | None = None  # report whether this file's content survived
    result: dict = field(default_factory=dict)


def verdict(kind: str, returncode: int | None, out: str, err: str, want_out: str | None,
            exec_error: OSError | None) -> str:
    if exec_error is not None:    # the case's own exec failed (an LSM denial would land here)
        return errno.errorcode.get(exec_error.errno, str(exec_error.errno))
    if returncode == KILLED:
        return "killed"
    if returncode is not None and returncode < 0:
        return f"signal-{-returncode}"
    if "Operation not permitted" in err:
        return "EPERM"
    if "Permission denied" in err:
        return "EACCES"
    if returncode == 0 and (want_out is None or want_out in out):
        return "runs" if kind == "exec" else "ok"
    return f"exit-{returncode}"


def spawn(argv: list[str], procs: str | None, timeout: float) -> tuple[int, int | None, str, str, int]:
    """fork, move into the cgroup (procs: its cgroup.procs), exec argv; (pid, returncode, stdout, stderr,
    errno of a failed exec or 0). Not subprocess: when the exec itself is refused (the LSM path), the
    child's pid is still needed to find its violation line."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    exc_r, exc_w = os.pipe()          # close-on-exec: EOF when the exec succeeded
    pid = os.fork()
    if pid == 0:                      # the child: os calls only, then exec or _exit
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            if procs is not None:
                fd = os.open(procs, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)
            os.execv(argv[0], argv)
        except OSError as error:
            os.write(exc_w, str(error.errno).encode())
        finally:
            os._exit(127)
    for fd in (out_w, err_w, exc_w):
        os.close(fd)
    with os.fdopen(exc_r, "rb") as exc:
        exec_errno = int(exc.read() or b"0")
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    open_fds = [out_r, err_r]
    while open_fds and time.monotonic() < deadline:
        readable, _, _ = select.select(open_fds, [], [], 0.1)
        for fd in readable:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
    timed_out = bool(open_fds)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    for fd in (out_r, err_r):
        os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline + 5 and not timed_out:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
        time.sleep(0.01)
    returncode = os.waitstatus_to_exitcode(status)
    err = b"".join(chunks[err_r]).decode(errors="replace")
    return pid, returncode, b"".join(chunks[out_r]).decode(errors="replace"), \
        ("timeout " if timed_out else "") + err, exec_errno


def run_case(case: Case, cgroup: Path, timeout: float) -> None:
    started = time.monotonic()
    pid, returncode, out, err, exec_errno = spawn(case.argv, str(cgroup / "cgroup.procs") if case.tagged else None,
                                                  timeout)
    exec_error = OSError(exec_errno, os.strerror(exec_errno)) if exec_errno else None
    err = err.strip()
    case.result = {
        "pid": pid,
        "rc": returncode if exec_error is None else f"exec:{exec_error.strerror}",
        "got": verdict(case.kind, None if exec_error else returncode, out, err, case.want_out, exec_error),
        "stderr": err.splitlines()[0][:100] if err else "",
        "ms": round((time.monotonic() - started) * 1000),
    }


def path_used(ready: dict, kind: str) -> str:
    """How this kernel's agent enforces a kind: lsm (refused before the act), tracepoint (killed after
    it) or cgroup (sock_addr programs) -- from agent_ready's `enforcement`, else from its `hooks`."""
    key = {"exec": "exec", "file": "file", "connect": "network"}[kind]
    enforcement = str((ready.get("enforcement") or {}).get(key, "")).strip()
    first = enforcement.split(" ", 1)[0].split("/", 1)[0] if enforcement else ""
    named = {"lsm": "lsm", "tp_btf": "tracepoint", "tracepoint": "tracepoint", "sched_process_exec": "tracepoint",
             "sys_exit_open*": "tracepoint", "raw_tp": "tracepoint", "fentry": "fentry", "cgroup": "cgroup"}
    if first in named:
        return named[first]
    hooks = [str(h) for h in (ready.get("hooks") or {}).get(key, [])]
    if any(h.startswith("lsm/") for h in hooks):
        return "lsm"
    if any(h.startswith(("tp_btf/", "tracepoint/", "tp/", "raw_tp/")) for h in hooks):
        return "tracepoint"
    if any(h.startswith("cgroup/") for h in hooks):
        return "cgroup"
    return "none"


def build_cases(base: Path, busybox_ok: str, busybox_forbidden: str, allowed_port: int,
                other_port: int) -> list[Case]:
    data = base / "data"
    # tracepoint path: the act happens, then SIGKILL; LSM path: the act is refused with EPERM, the process lives
    kill = {"tracepoint": {"killed"}, "lsm": {"EPERM"}}
    runs = {"tracepoint": {"runs"}, "lsm": {"runs"}}
    ok = {"tracepoint": {"ok"}, "lsm": {"ok"}, "cgroup": {"ok"}}
    return [
        Case("allowed-exec", "exec", True, [busybox_ok, "true"], runs),
        Case("forbidden-exec", "exec", True, [busybox_forbidden, "true"], kill, violation=True),
        Case("allowed-read", "file", True, [busybox_ok, "cat", str(data / "allowed.txt")], ok,
             want_out="allowed-content"),
        Case("forbidden-read", "file", True, [busybox_ok, "cat", str(base / "secret" / "secret.txt")], kill,
             violation=True),
        Case("forbidden-write", "file", True, [busybox_ok, "sh", "-c", f": > {data / 'readonly.txt'}"], kill,
             violation=True, watch_file=data / "readonly.txt"),
        Case("allowed-connect", "connect", True, [busybox_ok, "nc", "127.0.0.1", str(allowed_port)], ok,
             want_out="hello"),
        Case("forbidden-connect", "connect", True, [busybox_ok, "nc", "127.0.0.1", str(other_port)],
             {"cgroup": {"EPERM"}}, violation=True),
        Case("untagged-exec", "exec", False, [busybox_forbidden, "true"], runs),
        Case("untagged-read", "file", False, [busybox_forbidden, "cat", str(base / "secret" / "secret.txt")],
             ok, want_out="secret-content"),
        Case("untagged-write", "file", False,
             [busybox_forbidden, "sh", "-c", f": > {data / 'untagged.txt'}"], ok,
             watch_file=data / "untagged.txt"),
        Case("untagged-connect", "connect", False, [busybox_forbidden, "nc", "127.0.0.1", str(other_port)],
             ok, want_out="hello"),
    ]


def prepare(base: Path, busybox: str, allowed_port: int) -> tuple[str, str]:
    for sub in ("bin", "forbidden", "data", "secret", "policies"):
        (base / sub).mkdir(parents=True)
    base.chmod(0o755)
    allowed, forbidden = base / "bin" / "busybox", base / "forbidden" / "busybox"
    shutil.copy(busybox, allowed)
    shutil.copy(busybox, forbidden)
    (base / "data" / "allowed.txt").write_text("allowed-content\n")
    (base / "data" / "readonly.txt").write_text("readonly-content\n")
    (base / "data" / "untagged.txt").write_text("untagged-content\n")
    (base / "secret" / "secret.txt").write_text("secret-content\n")
    (base / "policies" / f"{POLICY}.yaml").write_text(f"""\
apiVersion: hostguard/v1
kind: Policy
name: {POLICY}
mode: enforce
exec:
  allow: [{allowed}]
files:
  allow:
    - {base / 'data'}/
network:
  on_violation: deny
  egress:
    - {{cidr: 127.0.0.1/32, ports: [{allowed_port}]}}
""")
    return str(allowed), str(forbidden)


def uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as seconds:
        return float(seconds.read().split()[0])


def kernel_facts() -> dict:
    try:
        lsm = Path("/sys/kernel/security/lsm").read_text().strip()
    except OSError:
        lsm = "?"   # securityfs is not mounted (on the host, often)
    return {"release": os.uname().release, "lsm": lsm,
            "btf": os.path.exists("/sys/kernel/btf/vmlinux")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the interpreter that runs the agent")
    parser.add_argument("--agent-root", required=True, help="directory holding the agent package")
    parser.add_argument("--bpf-dir", required=True, help="the built *.bpf.o")
    parser.add_argument("--busybox", default="/bin/busybox", help="a static busybox to copy for the cases")
    parser.add_argument("--results", action="append", default=[], help="also write result lines here")
    parser.add_argument("--lock-wait", type=float, default=0.0,
                        help="seconds to wait while another agent holds /run/hostguard.lock")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--case-timeout", type=float, default=60.0)
    parser.add_argument("--log-wait", type=float, default=15.0,
                        help="seconds to wait for the expected violation lines after the cases")
    args = parser.parse_args()

    out = [open(path, "w", encoding="utf-8") for path in args.results]  # noqa: SIM115 - until exit
    facts = kernel_facts()
    emit(out, "KERNEL " + fields(**facts, uptime=uptime()))
    busybox = os.path.realpath(args.busybox)
    base = Path(tempfile.mkdtemp(prefix="hgk-", dir="/tmp"))
    cgroup = unified_cgroup_mount() / f"hostguard-kernels-{os.getpid()}"
    cgroup.mkdir()
    agent = None
    try:
        allowed_listener, other_listener = Listener(), Listener()
        busybox_ok, busybox_forbidden = prepare(base, busybox, allowed_listener.port)
        cases = build_cases(base, busybox_ok, busybox_forbidden, allowed_listener.port, other_listener.port)
        agent = Agent(args, base, cgroup)
        started = time.monotonic()
        try:
            ready = agent.start()
        except RuntimeError as error:
            failed = [l for l in agent.lines() if l.get("event") == "agent_failed"]
            output = [line for line in agent.output().splitlines() if line.strip()]
            cause = failed[-1].get("error") if failed else (output[-1].strip() if output else "")
            emit(out, "AGENT_FAILED " + fields(error=str(error).splitlines()[0], cause=str(cause)[:300]))
            for line in str(error).splitlines()[1:]:
                print("  agent> " + line, flush=True)
            return 2
        emit(out, "AGENT_READY " + json.dumps(ready, sort_keys=True))
        emit(out, "TIMING " + fields(agent_ready_s=round(time.monotonic() - started - agent.lock_wait_s, 2),
                                     startup_ms=ready.get("startup_ms"), lock_wait_s=agent.lock_wait_s))
        started = time.monotonic()
        for case in cases:
            run_case(case, cgroup, args.case_timeout)
        cases_s = round(time.monotonic() - started, 2)

        # the agent's log: every expected violation (matched by pid), and none for the other cases
        pids = {case.result["pid"]: case for case in cases if case.result.get("pid")}
        waiting = time.monotonic()
        deadline = waiting + args.log_wait
        while True:
            logged: dict[int, list[dict]] = {}
            for line in agent.lines():
                if line.get("event") == "violation" and line.get("pid") in pids:
                    logged.setdefault(line["pid"], []).append(line)
            missing = [c for c in cases if c.violation and c.result.get("pid") not in logged]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        log_wait_s = round(time.monotonic() - waiting, 2)

        failed = 0
        for case in cases:
            path = path_used(ready, case.kind)
            expected = case.expected.get(path, set())
            got = case.result["got"]
            lines = logged.get(case.result.get("pid"), [])
            log = ",".join(sorted({f"{l.get('kind')}:{l.get('action')}" for l in lines})) or "-"
            log_expected = f"{case.kind}:{LOGGED_ACTION.get(path, '?')}" if case.violation else "-"
            content = "-"
            if case.watch_file is not None:
                original = case.watch_file.name.removesuffix(".txt") + "-content\n"
                content = "survived" if case.watch_file.read_text() == original else "truncated"
            ok = got in expected and log == log_expected
            if case.watch_file is not None and case.tagged and path == "lsm":
                ok = ok and content == "survived"      # the point of the LSM path: denied before it happens
            failed += not ok
            emit(out, "CASE " + fields(kernel=facts["release"], kind=case.kind, name=case.name,
                                       tagged="yes" if case.tagged else "no", path=path,
                                       expected="|".join(sorted(expected)) or "?", got=got,
                                       log=log, log_expected=log_expected, content=content,
                                       ok="yes" if ok else "no", rc=case.result["rc"],
                                       ms=case.result["ms"], stderr=case.result["stderr"]))
        for line in agent.lines():
            if line.get("level") in ("warning", "error") and line.get("event") != "violation":
                emit(out, "AGENT_LOG " + json.dumps(line, sort_keys=True))
        stopping = time.monotonic()
        rc = agent.stop()
        agent = None
        emit(out, "AGENT_EXIT " + fields(rc=rc, stop_s=round(time.monotonic() - stopping, 2)))
        emit(out, "RESULT " + fields(ok=len(cases) - failed, failed=failed, cases_s=cases_s,
                                     log_wait_s=log_wait_s))
        return 0 if failed == 0 and rc == 0 else 1
    finally:
        if agent is not None:
            agent.stop()
        try:
            cgroup.rmdir()
        except OSError as error:
            print(f"guest.py: could not remove {cgroup}: {error}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)
        for channel in out:
            channel.close()


if __name__ == "__main__":
    sys.exit(main())
