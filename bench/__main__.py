"""`python -m bench [--quick] [--only NAME...]`: every benchmark in one run, a table and a JSON file.

The figures are ratios measured side by side in this run on this machine; bench/README.md explains
the method and keeps the latest full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from . import agent_costs, scale, syscalls
from .common import BUILD

BENCHMARKS = {"syscalls": syscalls, "agent": agent_costs, "scale": scale}


def _machine() -> dict[str, str]:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        memory = meminfo.readline().split(":", 1)[1].strip()
    return {"kernel": platform.release(), "cpu": model, "cpus": str(len(os.sched_getaffinity(0))),
            "memory": memory, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts, one round: checks the harness only")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--output", type=Path, default=BUILD / "results.json")
    args = parser.parse_args(argv)

    results: dict[str, object] = {"machine": _machine(), "quick": args.quick,
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="hostguard-bench-") as tmp:
        for name, module in BENCHMARKS.items():
            if args.only and name not in args.only:
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            started = time.monotonic()
            result = module.run(workdir, quick=args.quick)
            result["seconds"] = round(time.monotonic() - started, 1)
            results[name] = result
            print("\n".join(module.table(result)), flush=True)
            print(flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
