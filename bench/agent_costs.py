"""Benchmarks 2-4: what the agent itself costs, beside the issue's targets.

  throughput  a tagged container in audit mode opens a file its policy does not allow, so every open
              is a logged violation. Unpaced bursts (bench/loops.c) find the largest burst the 8 MiB
              ring buffer takes without loss and the rate at which the agent drains it; paced runs
              (bench/burst.c, bind-mounted into the bench image) find the sustained rate at which loss
              begins. Loss is read from the agent's own `events_lost` lines, and every lossy run is
              checked: logged + lost == generated, to the event, and over the agent's life
              lines + lost_total == opens. Lines are matched by container id (lines drained after
              `docker run --rm` removed the container have an empty container_name); the container's
              violations other than the loop's opens are reported apart.
  startup     Popen to the `agent_ready` line (wall) and the agent's own `startup_ms` (from the
              kernel's process start time), enforcement live, with the agent's modules byte-compiled
              as when installed; bcc's figure comes from bench/peers.py.
  memory      VmHWM (peak RSS) idle, 2 s after ready, and after the throughput load.
  cpu         the agent's utime+stime while a known number of hooked syscalls run: an untagged host
              process and a tagged container whose policy allows the open. Verdicts are taken in the
              kernel, so this should be the agent's idle cost and nothing more; idle CPU over the same
              time is reported beside it.

quick=True is a smoke test of the harness: tiny counts, one repetition, and a 16 KiB ring buffer so
that loss (and its exact count) is certain within seconds; its figures are not the issue's.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.events import HgFileEvent
from tests.agent_process import AgentProcess, unique_name

from . import peers
from .common import BUILD, LOOPS_IN_IMAGE, REPO, agent, bench_image, run_loops, summarize, write_policy

__all__ = ["run", "table"]


def _peers_ready() -> dict[str, float | str]:
    """How long the peer tracers take from spawn to attached, or why they cannot run here."""
    ready: dict[str, float | str] = {}
    for peer in peers.PEERS:
        try:
            with peers.running(peer) as started:
                ready[peer] = started.startup_s * 1000
        except peers.PeerUnavailable as reason:
            ready[peer] = f"cannot run here: {reason}"
    return ready

AUDIT_POLICY = "bench-violations"    # audit mode; exec of the loop binaries only, no file beyond the baseline
ALLOW_POLICY = "bench-allowed"       # enforce mode; allows the file the CPU loop opens
VIOLATING_PATH = "/var/task/hello.txt"
HOST_PATH = "/etc/hostname"
BURST_IN_IMAGE = "/opt/bench/burst"
DEFAULT_RINGBUF_KB = 8192            # the agent's default (--ringbuf-kb)
QUICK_RINGBUF_KB = 16                # quick runs: a ring of ~27 events, so that loss is certain
LOCK_BUSY = "another hostguard agent is running"
LOCK_WAIT_S = 600.0                  # how long to wait for another engineer's agent to stop
LOCK_RETRY_S = 3.0
IDLE_S = 2.0                         # "idle": this long after agent_ready

TARGET_VIOLATIONS_PER_S = 100_000
TARGET_READY_MS = 150.0
TARGET_IDLE_RSS_MB = 40.0

FULL = {
    "repetitions": 3,
    "startup_runs": 7,
    "burst_ladder": [5_000, 10_000, 15_000, 20_000, 30_000, 50_000, 100_000],
    "burst_bisect": 4,
    "paced_ladder": [10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 100_000, 150_000, 200_000],
    "paced_bisect": 3,
    "paced_seconds": 5.0,
    "big_burst": 1_000_000,
    "cpu_count": 1_000_000,
    "cpu_idle_s": 5.0,
    "ringbuf_kb": DEFAULT_RINGBUF_KB,
}
QUICK = {
    "repetitions": 1,
    "startup_runs": 1,
    "burst_ladder": [10, 3_000],
    "burst_bisect": 0,
    "paced_ladder": [1_000, 100_000],
    "paced_bisect": 0,
    "paced_seconds": 0.3,
    "big_burst": 20_000,
    "cpu_count": 100_000,
    "cpu_idle_s": 1.0,
    "ringbuf_kb": QUICK_RINGBUF_KB,
}


# --- building and running the violating loops --------------------------------------------------------
def build_burst() -> Path:
    """The static paced loop (bench/burst.c), rebuilt when its source changes."""
    source, binary = REPO / "bench" / "burst.c", BUILD / "burst"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-static", "-o", str(binary), str(source)], check=True)
    return binary


def _policies(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_policy(directory, AUDIT_POLICY,
                 f"mode: audit\nexec:\n  allow: [{LOOPS_IN_IMAGE}, {BURST_IN_IMAGE}]\n")
    write_policy(directory, ALLOW_POLICY,
                 f"exec:\n  allow: [{LOOPS_IN_IMAGE}]\nfiles:\n  allow:\n    - /var/task/\n")
    return directory


def _violating_container(count: int, rate: int | None, workdir: Path) -> tuple[str, float]:
    """Run the violating loop in a tagged container: (its container id, the rate it generated, opens/s)."""
    name = unique_name("violations")
    cidfile = workdir / f"{name}.cid"
    command = ["docker", "run", "--rm", "--network", "none", "--name", name, "--cidfile", str(cidfile),
               "--label", f"hostguard.policy={AUDIT_POLICY}"]
    if rate is None:
        command += [bench_image(), LOOPS_IN_IMAGE, "open", VIOLATING_PATH, str(count)]
    else:
        command += ["-v", f"{build_burst()}:{BURST_IN_IMAGE}:ro", bench_image(),
                    BURST_IN_IMAGE, "open", VIOLATING_PATH, str(count), str(rate)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        container_id = cidfile.read_text().strip()
    finally:
        cidfile.unlink(missing_ok=True)
    output = json.loads(result.stdout)
    return container_id, output["rate"] if rate is not None else 1e9 / output["ns_per_op"]


# --- the agent -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _agent(policies: Path, log_dir: Path, *extra_args: str) -> Iterator[AgentProcess]:
    """bench.common.agent(), waiting (bounded) while another engineer's agent holds the host lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    for attempt in itertools.count(1):
        directory = log_dir / f"agent-{attempt}"
        directory.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            process = stack.enter_context(agent(policies, directory, *extra_args))
        except AssertionError as error:
            if LOCK_BUSY not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(LOCK_RETRY_S)
            continue
        with stack:
            yield process
        return


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS from /proc/<pid>/status, in MB (10^6 bytes)."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024 / 1e6
    return values


def _smaps_rollup_kb(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup in kB: where the resident memory is (anonymous, file, shared)."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            key, _, rest = line.partition(":")
            words = rest.split()
            if len(words) == 2 and words[1] == "kB":
                values[key] = int(words[0])
    return values


# --- the log, read as it grows ------------------------------------------------------------------------
class _LogTail:
    """An agent's JSON log read incrementally: a million lines are not parsed, only counted.

    A full run logs millions of lines, and AgentProcess keeps two copies (the log file and stdout):
    discard() empties both once a run has been counted, so that the benchmark needs little disk.
    """

    def __init__(self, process: AgentProcess) -> None:
        self.path = process.log_file
        self.copies = [process.log_file, process.log_file.with_suffix(".stdout")]
        self.offset = 0
        self.partial = b""

    def read(self) -> list[bytes]:
        """The complete lines appended since the last call."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return lines

    def discard(self) -> None:
        """Empty the log (opened for appending: the agent goes on at its start) and its stdout copy."""
        for path in self.copies:
            os.truncate(path, 0)     # stdout is not O_APPEND: it goes on at its offset, as a sparse file
        self.offset, self.partial = 0, b""


def _timestamp(line: bytes) -> float:
    """The `timestamp` of a log line (its first key) as POSIX seconds."""
    text = line.split(b'"', 4)[3].decode()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _burst(tail: _LogTail, count: int, rate: int | None, workdir: Path) -> dict[str, Any]:
    """One violating run and what the agent made of it: logged lines, counted loss, exactness.

    Lines are matched by container id: lines drained after `docker run --rm` removed the container
    carry an empty container_name.
    """
    tail.read()                          # earlier runs are complete: start from here
    container_id, generated_rate = _violating_container(count, rate, workdir)
    exited = time.monotonic()
    is_violation, is_ours = b'"event": "violation"', f'"container_id": "{container_id}"'.encode()
    is_loop = f'"path": "{VIOLATING_PATH}"'.encode()
    logged, lost, first, last, unnamed = 0, 0, None, None, 0
    others: list[dict[str, Any]] = []    # the container's violations that are not the loop's opens
    counters: dict[str, int] = {}
    progress = time.monotonic()
    deadline = exited + 60 + count / 10_000
    while True:
        for line in tail.read():
            if is_violation in line and is_ours in line and is_loop not in line:
                others.append(json.loads(line))
            elif is_violation in line and is_ours in line:
                logged += 1
                unnamed += b'"container_name": ""' in line
                last = line
                first = first or line
                progress = time.monotonic()
            elif b'"event": "events_lost"' in line:
                record = json.loads(line)
                lost += record["lost"]
                counters = {"lost_total": record["lost_total"], "violations_total": record["violations_total"]}
                progress = time.monotonic()
        now = time.monotonic()
        if logged + lost == count:
            break
        stalled = now - progress > 3.0 and now - exited > 2.5     # two counter ticks: nothing more to come
        if stalled or now > deadline:
            break
        time.sleep(0.05)
    tail.discard()
    span = _timestamp(last) - _timestamp(first) if first is not None and last is not first else 0.0
    return {
        "generated": count, "rate_target": rate, "generated_rate": round(generated_rate),
        "logged": logged, "lost": lost, "exact": logged + lost == count,
        "logged_rate": round((logged - 1) / span) if span > 0 else None,
        "log_span_s": round(span, 3),
        "logged_without_container_name": unnamed,
        "other_violations": others[:5], "other_violation_count": len(others),
        **counters,                      # the agent's counters at its last events_lost line of this run
    }


class _Throughput:
    """The violation runs of one agent; keeps every run for the report."""

    def __init__(self, tail: _LogTail, workdir: Path) -> None:
        self.tail = tail
        self.workdir = workdir
        self.runs: list[dict[str, Any]] = []

    def measure(self, count: int, rate: int | None = None) -> dict[str, Any]:
        result = _burst(self.tail, count, rate, self.workdir)
        self.runs.append(result)
        return result

    def totals(self) -> dict[str, Any]:
        """Over the agent's life: every line logged plus its final lost_total against every open made."""
        generated = sum(r["generated"] for r in self.runs)
        logged = sum(r["logged"] for r in self.runs)
        lost_total = max((r["lost_total"] for r in self.runs if "lost_total" in r), default=0)
        others = sum(r["other_violation_count"] for r in self.runs)
        return {"generated": generated, "logged": logged, "lost_total": lost_total,
                "other_violations_logged": others, "exact": logged + lost_total == generated}


def _search(measure: Callable[[int], dict[str, Any]], ladder: list[int],
            bisect_steps: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Climb the ladder to the first run with loss, then bisect between it and the last without.

    Returns (largest run without loss, smallest run with loss); either may be None.
    """
    clean = lossy = None
    for value in ladder:
        result = measure(value)
        if result["lost"] > 0:
            lossy = (value, result)
            break
        clean = (value, result)
    for _ in range(bisect_steps):
        if clean is None or lossy is None or lossy[0] - clean[0] <= max(1, clean[0] // 100):
            break
        value = (clean[0] + lossy[0]) // 2
        result = measure(value)
        if result["lost"] > 0:
            lossy = (value, result)
        else:
            clean = (value, result)
    return (clean[1] if clean else None), (lossy[1] if lossy else None)


def _maybe_summary(values: list[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    return summarize(present) if present else None


def _throughput(throughput: _Throughput, config: dict[str, Any]) -> dict[str, Any]:
    bursts = {"clean": [], "lossy": [], "drain": []}
    paced = {"clean": [], "lossy": []}
    seconds = config["paced_seconds"]
    for _ in range(config["repetitions"]):
        clean, lossy = _search(throughput.measure, config["burst_ladder"], config["burst_bisect"])
        bursts["clean"].append(clean["generated"] if clean else None)
        bursts["lossy"].append(lossy["generated"] if lossy else None)
        bursts["drain"].append(clean["logged_rate"] if clean else None)
        clean, lossy = _search(lambda rate: throughput.measure(max(1, int(rate * seconds)), rate),
                               config["paced_ladder"], config["paced_bisect"])
        paced["clean"].append(clean["rate_target"] if clean else None)
        paced["lossy"].append(lossy["rate_target"] if lossy else None)
    big = throughput.measure(config["big_burst"])
    lossy_runs = [r for r in throughput.runs if r["lost"] > 0]
    totals = throughput.totals()
    return {
        "ringbuf_kb": config["ringbuf_kb"],
        "ring_capacity_events": (config["ringbuf_kb"] << 10) // (ctypes.sizeof(HgFileEvent) + 8),
        "paced_seconds": seconds,
        "max_zero_loss_burst": _maybe_summary(bursts["clean"]),
        "min_lossy_burst": _maybe_summary(bursts["lossy"]),
        "drain_rate": _maybe_summary(bursts["drain"]),
        "max_zero_loss_rate": _maybe_summary(paced["clean"]),
        "min_lossy_rate": _maybe_summary(paced["lossy"]),
        "generator_rate": summarize([r["generated_rate"] for r in throughput.runs
                                     if r["rate_target"] is None and r["generated"] >= 1000]),
        "big_burst": big,
        "lossy_runs": len(lossy_runs),
        "lossy_runs_exact": sum(1 for r in lossy_runs if r["exact"]),
        "all_runs_exact": all(r["exact"] for r in throughput.runs),
        "agent_totals": totals,
        "logged_without_container_name": sum(r["logged_without_container_name"] for r in throughput.runs),
        "runs": throughput.runs,
    }


# --- start-up and idle memory --------------------------------------------------------------------------
def _start_once(policies: Path, workdir: Path) -> dict[str, Any] | None:
    """One agent start, timed to its agent_ready line; None when another agent holds the lock."""
    resolv_conf = workdir / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\n")
    ready = threading.Event()
    seen: dict[str, Any] = {}
    output: list[bytes] = []
    # As installed, the agent's modules are byte-compiled: a development shell's PYTHONDONTWRITEBYTECODE
    # would compile them at every start. The cache goes to the work directory, not the source tree.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--policies", str(policies), "--resolv-conf", str(resolv_conf)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:       # read to the end: a full pipe would stall the agent
            if ready.is_set():
                continue
            output.append(raw)
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("event") == "agent_ready":
                seen["wall_ms"] = (time.perf_counter() - started) * 1000
                seen["line"] = line
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(timeout=60)
        if "line" not in seen:
            text = b"".join(output).decode(errors="replace")
            if LOCK_BUSY in text:
                return None
            raise RuntimeError(f"the agent did not get ready: {text[-3000:]}")
        cpu_at_ready = _cpu_seconds(process.pid)
        time.sleep(IDLE_S)
        memory = _status_mb(process.pid)
        rollup = _smaps_rollup_kb(process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)
    return {"wall_ms": round(seen["wall_ms"], 1), "startup_ms": seen["line"]["startup_ms"],
            "cpu_ms": round(cpu_at_ready * 1000), "idle_hwm_mb": round(memory["VmHWM"], 1),
            "idle_rss_mb": round(memory["VmRSS"], 1), "smaps_rollup_kb": rollup}


def _startup(policies: Path, workdir: Path, runs: int, warm_up: bool) -> dict[str, Any]:
    """`runs` timed starts; with warm_up, one more before them that fills the page and bytecode caches."""
    samples = []
    first: dict[str, Any] = {}
    deadline = time.monotonic() + LOCK_WAIT_S
    for index in range(runs + (1 if warm_up else 0)):
        while (sample := _start_once(policies, workdir)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{LOCK_BUSY}: still after {LOCK_WAIT_S:.0f} s")
            time.sleep(LOCK_RETRY_S)
        if index or not warm_up:
            samples.append(sample)
        else:
            first = {key: sample[key] for key in ("startup_ms", "wall_ms", "cpu_ms")}
    return {
        "runs": len(samples),
        "warm_up_discarded": warm_up,
        "warm_up": first,                # its figures: modules compiled, files read from disk
        "bytecode_cache": "PYTHONPYCACHEPREFIX in the work directory",
        "startup_ms": summarize([s["startup_ms"] for s in samples]),
        "wall_ms": summarize([s["wall_ms"] for s in samples]),
        "cpu_ms_to_ready": summarize([s["cpu_ms"] for s in samples]),
        "peers_ready": _peers_ready(),   # bcc compiles and loads at start; bpftrace for comparison
        "idle_hwm_mb": summarize([s["idle_hwm_mb"] for s in samples]),
        "idle_rss_mb": summarize([s["idle_rss_mb"] for s in samples]),
        "idle_smaps_rollup_kb": samples[-1]["smaps_rollup_kb"],
    }


# --- CPU per hooked syscall ----------------------------------------------------------------------------
def _loops_retrying(*args: str, policy: str | None, failures: list[str]) -> float:
    """run_loops, again (at most twice) when the container failed to start.

    Under load the agent sometimes kills `runc init` as it re-executes itself (exe "/") in the tagged
    cgroup, and the container never starts; each such failure is kept for the report.
    """
    for attempt in range(3):
        try:
            return run_loops(*args, policy=policy)
        except RuntimeError as error:
            if policy is None or attempt == 2:
                raise
            failures.append(str(error)[-300:])
    raise AssertionError("unreachable")


def _cpu(pid: int, count: int, idle_s: float, repetitions: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {}
    failures: list[str] = []

    def record(key: str, **values: float) -> None:
        for name, value in values.items():
            samples.setdefault(key, {}).setdefault(name, []).append(round(value, 6))

    for _ in range(repetitions):
        before = _cpu_seconds(pid)
        time.sleep(idle_s)
        idle_per_s = (_cpu_seconds(pid) - before) / idle_s
        record("idle", cpu_s_per_s=idle_per_s)
        for key, args, policy in (("untagged_host", ("open", HOST_PATH, str(count)), None),
                                  ("tagged_container", ("open", VIOLATING_PATH, str(count)), ALLOW_POLICY)):
            before, started = _cpu_seconds(pid), time.monotonic()
            ns_per_op = _loops_retrying(*args, policy=policy, failures=failures)
            cpu, wall = _cpu_seconds(pid) - before, time.monotonic() - started
            record(key, agent_cpu_s=cpu, wall_s=wall, ns_per_op=ns_per_op,
                   cpu_s_per_million=cpu * 1e6 / count,
                   cpu_s_per_million_less_idle=(cpu - idle_per_s * wall) * 1e6 / count)
    out: dict[str, Any] = {"hooked_syscalls": count, "clock_tick_s": 1 / os.sysconf("SC_CLK_TCK"),
                           "container_start_failures": failures}
    for key, values in samples.items():
        out[key] = {name: summarize(series) for name, series in values.items()}
    return out


# --- the benchmark -------------------------------------------------------------------------------------
def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Throughput, start-up, memory and CPU of the real agent; quick: tiny counts, one repetition."""
    config = QUICK if quick else FULL
    policies = _policies(workdir / "policies")
    bench_image()
    build_burst()

    load_before = os.getloadavg()
    startup = _startup(policies, workdir, config["startup_runs"], warm_up=not quick)
    with _agent(policies, workdir / "load", "--ringbuf-kb", str(config["ringbuf_kb"])) as process:
        assert process.process is not None
        pid = process.process.pid
        time.sleep(IDLE_S)
        idle_here = _status_mb(pid)
        cpu = _cpu(pid, config["cpu_count"], config["cpu_idle_s"], config["repetitions"])
        throughput = _throughput(_Throughput(_LogTail(process), workdir), config)
        load_memory = _status_mb(pid)
        load_rollup = _smaps_rollup_kb(pid)
    memory = {
        "idle_hwm_mb": startup["idle_hwm_mb"],
        "idle_rss_mb": startup["idle_rss_mb"],
        "idle_smaps_rollup_kb": startup["idle_smaps_rollup_kb"],
        "load_agent_idle_hwm_mb": round(idle_here["VmHWM"], 1),
        "load_hwm_mb": round(load_memory["VmHWM"], 1),
        "load_rss_mb": round(load_memory["VmRSS"], 1),
        "load_smaps_rollup_kb": load_rollup,
    }
    return {
        "quick": quick,
        "repetitions": config["repetitions"],
        "throughput": throughput,
        "startup": startup,
        "memory": memory,
        "cpu": cpu,
        "targets": _targets(throughput, startup, memory),
        "loadavg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
    }


def _targets(throughput: dict[str, Any], startup: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets beside what was measured; `met` is false where a target is missed."""
    rate = throughput["max_zero_loss_rate"]
    sustained = rate["median"] if rate else None
    return {
        "violations_per_s_zero_loss": {
            "measured": sustained, "target": TARGET_VIOLATIONS_PER_S, "unit": "violations/s",
            "what": f"highest paced rate logged with zero loss over {throughput['paced_seconds']} s "
                    f"({throughput['ringbuf_kb']} KiB ring buffer)",
            "met": sustained is not None and sustained >= TARGET_VIOLATIONS_PER_S,
        },
        "loss_counted_exactly": {
            "measured": f"{throughput['lossy_runs_exact']}/{throughput['lossy_runs']} lossy runs exact",
            "target": "logged + lost == generated", "unit": "",
            "what": "every run with loss: violation lines + events_lost counts == opens generated; "
                    "over the agent's life: lines + lost_total == opens",
            "met": (throughput["lossy_runs"] > 0 and throughput["all_runs_exact"]
                    and throughput["agent_totals"]["exact"]),
        },
        "ready_ms": {
            "measured": startup["startup_ms"]["median"], "target": TARGET_READY_MS, "unit": "ms",
            "what": "process start to agent_ready (the agent's startup_ms)",
            "met": startup["startup_ms"]["median"] <= TARGET_READY_MS,
        },
        "ready_wall_ms": {
            "measured": startup["wall_ms"]["median"], "target": TARGET_READY_MS, "unit": "ms",
            "what": "Popen to the agent_ready line on stdout",
            "met": startup["wall_ms"]["median"] <= TARGET_READY_MS,
        },
        "idle_peak_rss_mb": {
            "measured": memory["idle_hwm_mb"]["median"], "target": TARGET_IDLE_RSS_MB, "unit": "MB",
            "what": f"VmHWM {IDLE_S:.0f} s after agent_ready",
            "met": memory["idle_hwm_mb"]["median"] <= TARGET_IDLE_RSS_MB,
        },
    }


# --- the report ----------------------------------------------------------------------------------------
def _spread(summary: dict[str, float] | None, fmt: str = "{:,.0f}", unit: str = "") -> str:
    if summary is None:
        return "not reached"
    text = fmt.format(summary["median"]) + unit
    if summary["n"] > 1:
        text += f" [{fmt.format(summary['min'])}-{fmt.format(summary['max'])}]"
    return text


def table(result: dict[str, Any]) -> list[str]:
    t, s, m, c = result["throughput"], result["startup"], result["memory"], result["cpu"]
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, measured: str, target: str = "", met: bool | None = None) -> None:
        rows.append((label, measured, target, "" if met is None else ("met" if met else "MISSED")))

    targets = result["targets"]
    v = targets["violations_per_s_zero_loss"]
    row(f"violations/s logged, zero loss (paced {t['paced_seconds']} s)",
        _spread(t["max_zero_loss_rate"], unit="/s"), f">= {TARGET_VIOLATIONS_PER_S:,}/s", v["met"])
    row("lowest paced rate with loss", _spread(t["min_lossy_rate"], unit="/s"))
    row("agent drain rate (largest clean burst)", _spread(t["drain_rate"], unit="/s"))
    row(f"largest burst without loss ({t['ringbuf_kb']} KiB ring, ~{t['ring_capacity_events']:,} events)",
        _spread(t["max_zero_loss_burst"]))
    row("smallest burst with loss", _spread(t["min_lossy_burst"]))
    row("generator rate (unpaced, in container)", _spread(t["generator_rate"], unit="/s"))
    big = t["big_burst"]
    row(f"burst of {big['generated']:,}: logged + lost", f"{big['logged']:,} + {big['lost']:,} = "
        f"{big['logged'] + big['lost']:,}", f"= {big['generated']:,}", big["exact"])
    totals = t["agent_totals"]
    row("agent's life: lines logged + lost_total", f"{totals['logged']:,} + {totals['lost_total']:,} = "
        f"{totals['logged'] + totals['lost_total']:,}", f"= {totals['generated']:,}", totals["exact"])
    row("loss counted exactly", targets["loss_counted_exactly"]["measured"], "every lossy run",
        targets["loss_counted_exactly"]["met"])
    row("violation lines with empty container_name", f"{t['logged_without_container_name']:,}",
        "(drained after --rm)")
    samples = {f"{v.get('kind')} {v.get('comm')} exe={v.get('exe')}" for r in t["runs"] for v in r["other_violations"]}
    row("unexpected violations in the containers", f"{t['agent_totals']['other_violations_logged']:,}"
        + (f" ({'; '.join(sorted(samples))})" if samples else ""), "0")
    if c.get("container_start_failures"):
        row("tagged containers that failed to start (retried)", str(len(c["container_start_failures"])), "0")
    row("ready from process start (startup_ms)", _spread(s["startup_ms"], "{:.0f}", " ms"),
        f"<= {TARGET_READY_MS:.0f} ms", targets["ready_ms"]["met"])
    row("ready, wall from Popen", _spread(s["wall_ms"], "{:.0f}", " ms"), f"<= {TARGET_READY_MS:.0f} ms",
        targets["ready_wall_ms"]["met"])
    row("agent CPU to ready", _spread(s["cpu_ms_to_ready"], "{:.0f}", " ms"))
    for peer, ready in s["peers_ready"].items():
        row(f"{peer}: spawn to attached", ready if isinstance(ready, str) else f"{ready:.0f} ms")
    row(f"peak RSS idle (VmHWM, ready + {IDLE_S:.0f} s)", _spread(m["idle_hwm_mb"], "{:.1f}", " MB"),
        f"<= {TARGET_IDLE_RSS_MB:.0f} MB", targets["idle_peak_rss_mb"]["met"])
    row("peak RSS after throughput load", f"{m['load_hwm_mb']:.1f} MB")
    for key, label in (("untagged_host", "untagged host"), ("tagged_container", "tagged container, allowed")):
        row(f"agent CPU per 1M hooked syscalls, {label}",
            _spread(c[key]["cpu_s_per_million"], "{:.3f}", " s")
            + f" (less idle {c[key]['cpu_s_per_million_less_idle']['median']:.3f} s)", "~0 (kernel verdicts)")
    row("agent CPU idle", _spread(c["idle"]["cpu_s_per_s"], "{:.4f}", " s/s"))

    width = max(len(r[0]) for r in rows)
    measured_width = max(len(r[1]) for r in rows)
    n = result["repetitions"]
    lines = [f"agent costs (median [min-max] over {n} repetition{'s' if n > 1 else ''}; "
             f"start-up over {s['runs']} runs)",
             f"  {'measure':{width}s}  {'measured':{measured_width}s}  {'target':16s} met"]
    lines += [f"  {label:{width}s}  {measured:{measured_width}s}  {target:16s} {met}".rstrip()
              for label, measured, target, met in rows]
    return lines
