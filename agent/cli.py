"""hostguard's command line: `run` (the agent) and `validate` (policy files, for CI and editors)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .policy import PolicyErrors, load_policy_paths

__all__ = ["main"]


def _validate(args: argparse.Namespace) -> int:
    try:
        policies = load_policy_paths(args.paths)
    except PolicyErrors as errors:
        for error in errors.errors:
            print(error, file=sys.stderr)
        return 1
    for name, policy in policies.items():
        print(f"{policy.source}: ok ({name}, {policy.mode.value})")
    return 0


def _cgroup_tag(value: str) -> tuple[Path, str]:
    directory, sep, policy = value.rpartition("=")
    if not sep or not directory or not policy:
        raise argparse.ArgumentTypeError(f"expected DIR=POLICY, got {value!r}")
    return Path(directory), policy


def _route_libbpf_log(logger: object, debug: bool) -> None:
    """libbpf's warnings reach the operator; its info and debug chatter only with --debug."""
    from . import libbpf

    def forward(level: int, message: str) -> None:
        if level == 0:
            logger.warning("libbpf", message=message)
        elif debug:
            logger.debug("libbpf", message=message, libbpf_level=level)

    libbpf.set_log_callback(forward)


def _run(args: argparse.Namespace) -> int:
    # libbpf, the loader and the runner need libbpf.so.1 and a kernel: `validate` must not
    from . import loader, log
    from .runner import AgentOptions, run_agent

    sink = log.LogSink(args.log_file)
    log.configure(sink, debug=args.debug)
    logger = log.get_logger()
    _route_libbpf_log(logger, args.debug)
    options = AgentOptions(
        policies=Path(args.policies),
        object_dir=Path(args.bpf_dir) if args.bpf_dir else loader.default_object_dir(),
        docker_socket=args.docker_socket,
        docker=args.docker,
        cgroups=tuple(args.cgroup),
        resolv_conf=args.resolv_conf,
        ringbuf_bytes=args.ringbuf_kb << 10,
    )
    try:
        return run_agent(options, logger, sink.reopen)
    except OSError as error:
        logger.error("agent_failed", error=str(error))
        return 1
    finally:
        sink.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--policies", required=True, metavar="DIR", help="directory of policy files")
    run.add_argument("--log-file", metavar="FILE", help="also append the JSON log here (reopened on SIGHUP)")
    run.add_argument("--docker-socket", default="/var/run/docker.sock", metavar="PATH")
    run.add_argument("--no-docker", dest="docker", action="store_false",
                     help="do not discover Docker containers (tag cgroups with --cgroup instead)")
    run.add_argument("--cgroup", action="append", default=[], type=_cgroup_tag, metavar="DIR=POLICY",
                     help="put a cgroup2 directory (absolute, or relative to the cgroup2 mount) and "
                          "everything below it under POLICY; repeatable")
    run.add_argument("--resolv-conf", default="/etc/resolv.conf", metavar="FILE",
                     help="nameservers for policy host names (default /etc/resolv.conf; /etc/hosts first)")
    run.add_argument("--bpf-dir", metavar="DIR", help="where the built *.bpf.o are (default: build/bpf)")
    run.add_argument("--ringbuf-kb", type=int, default=8192, metavar="N",
                     help="event ring buffer size in KiB: a power of two, at least the page size "
                          "(default 8192); a full buffer loses log lines (counted), never enforcement")
    run.add_argument("--debug", action="store_true", help="log libbpf's debug output too")
    run.set_defaults(func=_run)

    validate = commands.add_parser("validate", help="check policy files; exit 1 with file:line: field: message")
    validate.add_argument("paths", nargs="+", metavar="FILE|DIR")
    validate.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
