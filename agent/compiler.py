"""Policy -> BPF map entries: a pure function, so the kernel's view of a policy can be unit-tested.

The byte layouts mirror bpf/hostguard.h (tests/test_layout.py checks them against the objects' BTF).

Semantics the kernel relies on:
- Path rules live in LPM tries keyed by (policy id, path). A rule ending in "/" is a prefix; any
  other rule is stored with its terminating NUL so it only matches that exact path. The kernel names
  directories with a trailing "/", so an exact rule "/x" is also stored as "/x/" for the directory.
- Allow lists are unions. An LPM trie returns only the longest match, so each stored rule carries the
  access of every shorter prefix rule covering it, and each network carries the ports of every wider
  network containing it. The longest match is then always the union of all rules that match.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import baseline
from .policy import Access, FileRule, Mode, NetAction, Policy, PortRange

__all__ = [
    "CGROUP",
    "CompileError",
    "HostAddresses",
    "NET4_KEY",
    "NET6_KEY",
    "PATH_KEY",
    "PATH_KEY_LEN",
    "PENDING_KEY",
    "POLICY",
    "PORTS",
    "RULE_VALUE",
    "RuleSet",
    "compile_policy",
    "fail_closed_policy",
    "path_key",
]

# Keep in sync with bpf/hostguard.h.
PATH_KEY_LEN = 252
MAX_PORT_RANGES = 16
PENDING_NAME_LEN = 80
HG_MODE = {Mode.ENFORCE: 0, Mode.AUDIT: 1}
HG_NET_ACTION = {NetAction.DENY: 0, NetAction.KILL: 1}

POLICY = struct.Struct("<II")                    # struct hg_policy
CGROUP = struct.Struct("<II")                    # struct hg_cgroup
PATH_KEY = struct.Struct(f"<II{PATH_KEY_LEN}s")  # struct hg_path_key
RULE_VALUE = struct.Struct("<I")                 # exec_rules / file_rules values
NET4_KEY = struct.Struct("<II4s")                # struct hg_net4_key
NET6_KEY = struct.Struct("<II16s")               # struct hg_net6_key
PORTS = struct.Struct("<II" + "HH" * MAX_PORT_RANGES)  # struct hg_ports
PENDING_KEY = struct.Struct(f"<{PENDING_NAME_LEN}s")   # struct hg_pending_key

ANY_PORT = (PortRange(1, 65535),)

HostAddresses = Mapping[str, Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]]
"""What each policy host name resolved to (the agent resolves and refreshes them)."""


class CompileError(ValueError):
    """A valid policy that the kernel maps cannot express (e.g. too many port ranges)."""


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything one policy puts into the kernel, as map entries (key bytes -> value bytes)."""

    policy: bytes
    exec_rules: Mapping[bytes, bytes]
    file_rules: Mapping[bytes, bytes]
    net4_rules: Mapping[bytes, bytes]
    net6_rules: Mapping[bytes, bytes]


def path_key(policy_id: int, path: str) -> bytes:
    """The LPM key of a path rule: "dir/" rules are prefixes, anything else an exact path."""
    raw = path.encode()
    if not path.endswith(("/", "\0")):
        raw += b"\0"
    if len(raw) > PATH_KEY_LEN:
        raise CompileError(f"path longer than {PATH_KEY_LEN - 2} bytes: {path!r}")
    return PATH_KEY.pack(32 + 8 * len(raw), policy_id, raw)


def _ancestor_prefixes(path: str) -> Iterable[str]:
    """Every "dir/" prefix strictly shorter than path, shortest first ("/" included)."""
    for index, char in enumerate(path[:-1] if path.endswith("/") else path):
        if char == "/":
            yield path[: index + 1]


def _file_rule_paths(rules: Iterable[FileRule]) -> dict[str, Access]:
    """Rule path -> access, exact files also as their directory form, access unioned per path.

    The directory form of an exact rule "/x" is the exact name "/x/" (NUL included): the directory
    itself, never what is inside it.
    """
    paths: dict[str, Access] = {}
    for rule in rules:
        forms = [rule.path] if rule.path.endswith("/") else [rule.path, rule.path + "/\0"]
        for form in forms:
            paths[form] = paths.get(form, Access(0)) | rule.access
    return paths


def _union_with_prefixes(paths: dict[str, Access]) -> dict[str, Access]:
    prefixes = {path: access for path, access in paths.items() if path.endswith("/")}
    merged = {}
    for path, access in paths.items():
        for prefix in _ancestor_prefixes(path):
            access |= prefixes.get(prefix, Access(0))
        merged[path] = access
    return merged


def _merge_ranges(ranges: Iterable[PortRange]) -> list[PortRange]:
    merged: list[PortRange] = []
    for current in sorted(ranges, key=lambda r: r.first):
        if merged and current.first <= merged[-1].last + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.first, max(last.last, current.last))
        else:
            merged.append(current)
    return merged


def _pack_ports(ranges: list[PortRange], where: str) -> bytes:
    if len(ranges) > MAX_PORT_RANGES:
        raise CompileError(f"{where}: {len(ranges)} port ranges, the kernel map holds {MAX_PORT_RANGES}")
    flat: list[int] = []
    for port_range in ranges:
        flat += [port_range.first, port_range.last]
    flat += [0, 0] * (MAX_PORT_RANGES - len(ranges))
    return PORTS.pack(len(ranges), 0, *flat)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _egress_networks(policy: Policy, hosts: HostAddresses) -> dict[Network, list[PortRange]]:
    """Network -> the port ranges any rule grants it (host rules become /32 and /128 networks)."""
    networks: dict[Network, list[PortRange]] = {}
    for rule in policy.egress:
        ports = list(rule.ports or ANY_PORT)
        if rule.network is not None:
            targets: list[Network] = [rule.network]
        else:
            targets = [ipaddress.ip_network(address) for address in hosts.get(rule.host or "", ())]
        for network in targets:
            networks.setdefault(network, []).extend(ports)
    return networks


def _compile_networks(policy_id: int, networks: dict[Network, list[PortRange]]) -> tuple[dict, dict]:
    """Each network's ports include those of every wider network containing it (looked up by
    prefix length, so a policy of many CIDRs compiles in linear time)."""
    net4: dict[bytes, bytes] = {}
    net6: dict[bytes, bytes] = {}
    for network, ports in networks.items():
        union = list(ports)
        for prefixlen in range(network.prefixlen - 1, -1, -1):
            union += networks.get(network.supernet(new_prefix=prefixlen), [])
        value = _pack_ports(_merge_ranges(union), str(network))
        if network.version == 4:
            key = NET4_KEY.pack(32 + network.prefixlen, policy_id, network.network_address.packed)
            net4[key] = value
        else:
            key = NET6_KEY.pack(32 + network.prefixlen, policy_id, network.network_address.packed)
            net6[key] = value
    return net4, net6


def compile_policy(policy: Policy, policy_id: int, hosts: HostAddresses | None = None) -> RuleSet:
    """The map entries that put policy into force under policy_id."""
    exec_paths = list(policy.exec_allow) + (list(baseline.EXEC) if policy.baseline else [])
    file_rules = list(policy.file_allow) + (list(baseline.FILES) if policy.baseline else [])
    file_rules += [FileRule(path, Access.READ) for path in exec_paths]   # what may run may be read
    rule_allowed = RULE_VALUE.pack(1)
    exec_entries = {path_key(policy_id, path): rule_allowed for path in exec_paths}
    file_entries = {
        path_key(policy_id, path): RULE_VALUE.pack(access.value)
        for path, access in _union_with_prefixes(_file_rule_paths(file_rules)).items()
    }
    net4, net6 = _compile_networks(policy_id, _egress_networks(policy, hosts or {}))
    settings = POLICY.pack(HG_MODE[policy.mode], HG_NET_ACTION[policy.on_violation])
    return RuleSet(settings, exec_entries, file_entries, net4, net6)


def fail_closed_policy(name: str) -> Policy:
    """What a container labelled with an unknown policy name gets: the baseline, enforced."""
    return Policy(
        name=name,
        mode=Mode.ENFORCE,
        baseline=True,
        exec_allow=(),
        file_allow=(),
        on_violation=NetAction.DENY,
        egress=(),
        source="<fail-closed: no policy file defines this name>",
    )
