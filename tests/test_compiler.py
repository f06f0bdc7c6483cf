"""Unit tests for agent.compiler: policies -> the exact BPF map entries (no kernel needed).

Keys and values are decoded with the module's own struct.Struct objects, and path lookups are checked
with a model of the kernel's LPM trie lookup (longest matching prefix of (policy id, path, NUL)).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence

import pytest

from agent import baseline
from agent.compiler import (
    NET4_KEY,
    NET6_KEY,
    PATH_KEY,
    PATH_KEY_LEN,
    POLICY,
    PORTS,
    RULE_VALUE,
    CompileError,
    RuleSet,
    compile_policy,
    fail_closed_policy,
    path_key,
)
from agent.policy import (
    Access,
    EgressRule,
    FileRule,
    Mode,
    NetAction,
    Policy,
    PortRange,
    parse_policy,
)

PID = 7
R = Access.READ
RW = Access.READ | Access.WRITE
ANY = [(1, 65535)]
PortSpec = int | tuple[int, int]


# --- building policies ---------------------------------------------------------------


def make_policy(
    *,
    exec_allow: Sequence[str] = (),
    file_allow: Sequence[FileRule] = (),
    egress: Sequence[EgressRule] = (),
    baseline_on: bool = False,
    mode: Mode = Mode.ENFORCE,
    on_violation: NetAction = NetAction.DENY,
) -> Policy:
    """A policy with only what the test names (baseline off unless asked for)."""
    return Policy(
        name="test",
        mode=mode,
        baseline=baseline_on,
        exec_allow=tuple(exec_allow),
        file_allow=tuple(file_allow),
        on_violation=on_violation,
        egress=tuple(egress),
        source="test.yaml",
    )


def _ranges(ports: Sequence[PortSpec]) -> tuple[PortRange, ...]:
    return tuple(PortRange(p, p) if isinstance(p, int) else PortRange(*p) for p in ports)


def cidr(network: str, *ports: PortSpec) -> EgressRule:
    """An egress rule to a network; no ports means any port."""
    return EgressRule(ipaddress.ip_network(network), None, _ranges(ports))


def host(name: str, *ports: PortSpec) -> EgressRule:
    """An egress rule to a host name; no ports means any port."""
    return EgressRule(None, name, _ranges(ports))


# --- decoding map entries ------------------------------------------------------------


def decode_path_key(key: bytes) -> tuple[int, int, str]:
    """(prefixlen, policy id, the path bytes inside the prefix as text); checks the zero padding."""
    prefixlen, policy_id, raw = PATH_KEY.unpack(key)
    size = (prefixlen - 32) // 8
    assert (prefixlen - 32) % 8 == 0
    assert bytes(PATH_KEY_LEN - size) == raw[size:]
    return prefixlen, policy_id, raw[:size].decode()


def path_table(rules: Mapping[bytes, bytes], policy_id: int = PID) -> dict[str, int]:
    """Path rule entries as {path bytes (an exact rule keeps its "\\0"): value}."""
    table = {}
    for key, value in rules.items():
        _prefixlen, key_policy, path = decode_path_key(key)
        assert policy_id == key_policy
        (table[path],) = RULE_VALUE.unpack(value)
    return table


def file_table(rule_set: RuleSet, policy_id: int = PID) -> dict[str, Access]:
    """file_rules as {path bytes: access}; a directory form "dir/" is shown without any NUL after it.

    The kernel names a directory "dir/" followed by its NUL, so the directory form of an exact rule is
    found whether it is stored as "dir/" or "dir/\0"; which of the two it may be is a matter of what
    else it matches, and the kernel_lookup tests check that.
    """
    table: dict[str, Access] = {}
    for path, value in path_table(rule_set.file_rules, policy_id).items():
        table[path[:-1] if path.endswith("/\0") else path] = Access(value)
    return table


def decode_ports(value: bytes) -> list[tuple[int, int]]:
    """A struct hg_ports value as its ranges; checks that the unused slots are zero."""
    count, pad, *flat = PORTS.unpack(value)
    assert 0 == pad
    assert [0] * (len(flat) - 2 * count) == flat[2 * count:]
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(count)]


def net_table(rules: Mapping[bytes, bytes], key_struct: struct.Struct,
              policy_id: int = PID) -> dict[str, list[tuple[int, int]]]:
    """net4_rules or net6_rules as {"network/prefix": port ranges}."""
    table = {}
    for key, value in rules.items():
        prefixlen, key_policy, addr = key_struct.unpack(key)
        assert policy_id == key_policy
        table[str(ipaddress.ip_network((addr, prefixlen - 32)))] = decode_ports(value)
    return table


def net4(rule_set: RuleSet) -> dict[str, list[tuple[int, int]]]:
    return net_table(rule_set.net4_rules, NET4_KEY)


def net6(rule_set: RuleSet) -> dict[str, list[tuple[int, int]]]:
    return net_table(rule_set.net6_rules, NET6_KEY)


def kernel_lookup(rules: Mapping[bytes, bytes], path: str, policy_id: int = PID) -> Access | None:
    """What the kernel's lookup_path_rule() finds for path ("dir/" for a directory), or None.

    Mirrors bpf/common.h: the key is (policy id, path, NUL) cut to PATH_KEY_LEN bytes, and the LPM trie
    returns the entry with the longest prefix that matches it.
    """
    raw = (path.encode() + b"\0")[:PATH_KEY_LEN]
    query = struct.pack("<I", policy_id) + raw
    best: tuple[int, int] | None = None
    for key, value in rules.items():
        prefixlen, key_policy, stored = PATH_KEY.unpack(key)
        size = prefixlen // 8
        data = struct.pack("<I", key_policy) + stored
        if size <= len(query) and data[:size] == query[:size] and (best is None or prefixlen > best[0]):
            best = (prefixlen, RULE_VALUE.unpack(value)[0])
    return None if best is None else Access(best[1])


def baseline_file_table() -> dict[str, Access]:
    """file_rules of the baseline alone, from its rules: prefixes as is, exact files also as "dir/"."""
    table: dict[str, Access] = {}
    for rule in baseline.FILES:
        forms = [rule.path] if rule.path.endswith("/") else [rule.path + "\0", rule.path + "/"]
        for form in forms:
            table[form] = table.get(form, Access(0)) | rule.access
    return table


# --- tests ---------------------------------------------------------------------------


class TestPathKey:
    """path_key: the LPM key of one path rule."""

    def test_exact_path_carries_its_nul_inside_the_prefix(self) -> None:
        """An exact path is stored with a terminating NUL and prefixlen 32 + 8 * (len + 1)."""
        expected = struct.pack("<II", 32 + 8 * 8, PID) + b"/bin/sh\0" + bytes(PATH_KEY_LEN - 8)
        assert expected == path_key(PID, "/bin/sh")

    def test_exact_path_decodes_to_policy_id_and_path_with_nul(self) -> None:
        """Decoding an exact key gives back the policy id, the path and its NUL."""
        assert (32 + 8 * len("/etc/hosts\0"), PID, "/etc/hosts\0") == decode_path_key(path_key(PID, "/etc/hosts"))

    def test_directory_prefix_has_no_nul(self) -> None:
        """A "dir/" rule is a prefix: no NUL, prefixlen 32 + 8 * len."""
        expected = struct.pack("<II", 32 + 8 * 5, PID) + b"/usr/" + bytes(PATH_KEY_LEN - 5)
        assert expected == path_key(PID, "/usr/")

    def test_root_prefix_is_one_byte(self) -> None:
        """The rule "/" covers everything: a one-byte prefix."""
        assert (32 + 8, PID, "/") == decode_path_key(path_key(PID, "/"))

    def test_key_has_the_struct_size(self) -> None:
        """Every key is exactly sizeof(struct hg_path_key) = 8 + PATH_KEY_LEN bytes."""
        assert [8 + PATH_KEY_LEN] * 2 == [len(path_key(PID, "/a")), len(path_key(PID, "/a/"))]

    def test_length_counts_utf8_bytes(self) -> None:
        """A non-ASCII path is measured in UTF-8 bytes, not characters."""
        assert (32 + 8 * 8, PID, "/tmp/é\0") == decode_path_key(path_key(PID, "/tmp/é"))

    def test_policy_id_is_part_of_the_key(self) -> None:
        """The same path under two policy ids gives two different keys."""
        assert (1, 2) == (decode_path_key(path_key(1, "/x"))[1], decode_path_key(path_key(2, "/x"))[1])

    def test_longest_exact_path_fits_with_its_nul(self) -> None:
        """An exact path of PATH_KEY_LEN - 1 bytes fills the key together with its NUL."""
        path = "/" + "a" * (PATH_KEY_LEN - 2)
        assert (32 + 8 * PATH_KEY_LEN, PID, path + "\0") == decode_path_key(path_key(PID, path))

    def test_longest_prefix_fits(self) -> None:
        """A "dir/" prefix of PATH_KEY_LEN bytes fills the key."""
        path = "/" + "a" * (PATH_KEY_LEN - 2) + "/"
        assert (32 + 8 * PATH_KEY_LEN, PID, path) == decode_path_key(path_key(PID, path))

    def test_too_long_exact_path_raises(self) -> None:
        """An exact path whose NUL would not fit raises CompileError."""
        with pytest.raises(CompileError):
            path_key(PID, "/" + "a" * (PATH_KEY_LEN - 1))

    def test_too_long_prefix_raises(self) -> None:
        """A prefix longer than the key raises CompileError."""
        with pytest.raises(CompileError):
            path_key(PID, "/" + "a" * (PATH_KEY_LEN - 1) + "/")

    def test_compile_error_is_a_value_error(self) -> None:
        """CompileError is a ValueError, so callers handling bad input catch it."""
        assert issubclass(CompileError, ValueError)


class TestExecRules:
    """exec_rules: the programs a policy may execute."""

    def test_exec_allow_paths_become_allowed_entries(self) -> None:
        """Each exec_allow path becomes one entry with value 1, exact or prefix as written."""
        rule_set = compile_policy(make_policy(exec_allow=["/usr/local/bin/node", "/opt/tools/"]), PID)
        assert {"/usr/local/bin/node\0": 1, "/opt/tools/": 1} == path_table(rule_set.exec_rules)

    def test_exec_values_are_packed_rule_values(self) -> None:
        """The allowed value is RULE_VALUE-packed 1 (little-endian u32)."""
        rule_set = compile_policy(make_policy(exec_allow=["/bin/sh"]), PID)
        assert {path_key(PID, "/bin/sh"): b"\x01\0\0\0"} == dict(rule_set.exec_rules)

    def test_no_exec_allow_and_no_baseline_allows_nothing(self) -> None:
        """Without exec_allow and baseline no program is allowed."""
        assert {} == dict(compile_policy(make_policy(), PID).exec_rules)

    def test_baseline_on_adds_baseline_exec(self) -> None:
        """With the baseline on, exec_rules are exec_allow plus baseline.EXEC."""
        rule_set = compile_policy(make_policy(exec_allow=["/bin/app"], baseline_on=True), PID)
        expected = {path_key(PID, path) for path in ("/bin/app", *baseline.EXEC)}
        assert expected == set(rule_set.exec_rules)

    def test_baseline_exec_entries_follow_the_baseline_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A baseline program is allowed with the baseline on and not with it off."""
        monkeypatch.setattr(baseline, "EXEC", ("/bin/busybox",))
        on = compile_policy(make_policy(exec_allow=["/bin/app"], baseline_on=True), PID)
        off = compile_policy(make_policy(exec_allow=["/bin/app"], baseline_on=False), PID)
        assert ({"/bin/app\0": 1, "/bin/busybox\0": 1}, {"/bin/app\0": 1}) == (
            path_table(on.exec_rules), path_table(off.exec_rules))

    def test_exec_allowed_file_is_readable(self) -> None:
        """An exact exec path is also a read file rule (exact and directory form)."""
        rule_set = compile_policy(make_policy(exec_allow=["/usr/local/bin/node"]), PID)
        assert {"/usr/local/bin/node\0": R, "/usr/local/bin/node/": R} == file_table(rule_set)

    def test_exec_allowed_directory_is_readable(self) -> None:
        """An exec prefix "dir/" is also a read prefix file rule."""
        rule_set = compile_policy(make_policy(exec_allow=["/opt/tools/"]), PID)
        assert {"/opt/tools/": R} == file_table(rule_set)

    def test_exec_read_unions_with_a_file_rule(self) -> None:
        """An exec path that a file rule grants read-write stays read-write."""
        rule_set = compile_policy(
            make_policy(exec_allow=["/app/run.sh"], file_allow=[FileRule("/app/run.sh", RW)]), PID)
        assert {"/app/run.sh\0": RW, "/app/run.sh/": RW} == file_table(rule_set)

    def test_exec_entries_use_the_policy_id(self) -> None:
        """Every exec key carries the policy id it was compiled for."""
        rule_set = compile_policy(make_policy(exec_allow=["/a", "/b/"]), 42)
        assert {42} == {decode_path_key(key)[1] for key in rule_set.exec_rules}


class TestFileRules:
    """file_rules: paths, access and the union semantics of the LPM trie."""

    def test_exact_rule_also_yields_directory_form(self) -> None:
        """An exact rule "/x" is stored as "/x" with its NUL and also as the directory "/x/"."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data/file", R)]), PID)
        assert {"/data/file\0": R, "/data/file/": R} == file_table(rule_set)

    def test_exact_rule_matches_the_path_and_its_directory_form(self) -> None:
        """The kernel finds an exact rule for the path itself and for it named as a directory."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data/x", RW)]), PID)
        assert (RW, RW) == (kernel_lookup(rule_set.file_rules, "/data/x"),
                            kernel_lookup(rule_set.file_rules, "/data/x/"))

    def test_exact_rule_does_not_match_a_longer_name(self) -> None:
        """An exact rule "/data/x" does not match "/data/xy" (the NUL ends the match)."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data/x", R)]), PID)
        assert None is kernel_lookup(rule_set.file_rules, "/data/xy")

    def test_prefix_rule_has_no_exact_form(self) -> None:
        """A "dir/" rule is stored once, as a prefix."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/var/task/", R)]), PID)
        assert {"/var/task/": R} == file_table(rule_set)

    def test_prefix_rule_matches_everything_under_it(self) -> None:
        """The kernel finds a "dir/" rule for the directory and anything below it."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/var/task/", R)]), PID)
        assert [R, R, R, None] == [kernel_lookup(rule_set.file_rules, path) for path in
                                   ("/var/task/", "/var/task/index.js", "/var/task/lib/a.js", "/var/taskx")]

    def test_access_values_are_the_access_bits(self) -> None:
        """Values are RULE_VALUE-packed access bits: read 1, read-write 3."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/r/", R), FileRule("/rw/", RW)]), PID)
        assert {path_key(PID, "/r/"): RULE_VALUE.pack(1), path_key(PID, "/rw/"): RULE_VALUE.pack(3)} == dict(
            rule_set.file_rules)

    def test_baseline_files_present_when_baseline_on(self) -> None:
        """With the baseline on and no rules, file_rules are exactly the baseline files."""
        rule_set = compile_policy(make_policy(baseline_on=True), PID)
        assert baseline_file_table() == file_table(rule_set)

    def test_baseline_samples(self) -> None:
        """The loader cache and libraries are readable, /dev/null is read-write."""
        table = file_table(compile_policy(make_policy(baseline_on=True), PID))
        assert (R, R, R, RW) == (table["/etc/ld.so.cache\0"], table["/etc/ld.so.cache/"], table["/lib/"],
                                 table["/dev/null\0"])

    def test_baseline_files_absent_when_baseline_off(self) -> None:
        """With the baseline off only the policy's own rules are stored."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/srv/", R)], baseline_on=False), PID)
        assert {"/srv/": R} == file_table(rule_set)

    def test_baseline_plus_own_rules(self) -> None:
        """With the baseline on, a policy's rules are added to the baseline files."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/srv/", R)], baseline_on=True), PID)
        assert {**baseline_file_table(), "/srv/": R} == file_table(rule_set)

    def test_longer_rule_gets_access_of_covering_prefix(self) -> None:
        """"/tmp/" read-write plus "/tmp/a" read stores "/tmp/a" read-write."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/tmp/", RW), FileRule("/tmp/a", R)]), PID)
        assert {"/tmp/": RW, "/tmp/a\0": RW, "/tmp/a/": RW} == file_table(rule_set)

    def test_union_over_several_prefix_levels(self) -> None:
        """A rule gets the union of every shorter prefix rule on its way up to "/"."""
        rules = [FileRule("/", R), FileRule("/tmp/", RW), FileRule("/tmp/cache/", R), FileRule("/tmp/cache/x", R)]
        rule_set = compile_policy(make_policy(file_allow=rules), PID)
        assert {"/": R, "/tmp/": RW, "/tmp/cache/": RW, "/tmp/cache/x\0": RW, "/tmp/cache/x/": RW} == file_table(
            rule_set)

    def test_longest_match_is_the_union(self) -> None:
        """Under "/tmp/" read-write, a file that a read rule names exactly is still writable."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/tmp/", RW), FileRule("/tmp/a", R)]), PID)
        assert RW == kernel_lookup(rule_set.file_rules, "/tmp/a")

    def test_shorter_prefix_does_not_gain_from_longer_rule(self) -> None:
        """A read-write rule below a read prefix does not make the prefix writable."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data/", R), FileRule("/data/out/", RW)]), PID)
        assert {"/data/": R, "/data/out/": RW} == file_table(rule_set)

    def test_prefix_rule_does_not_leak_into_siblings(self) -> None:
        """"/tmp/a/" read-write gives nothing to the sibling "/tmp/ab" (not under "/tmp/a/")."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/tmp/a/", RW), FileRule("/tmp/ab", R)]), PID)
        assert {"/tmp/a/": RW, "/tmp/ab\0": R, "/tmp/ab/": R} == file_table(rule_set)

    def test_sibling_prefix_is_not_found_by_the_kernel(self) -> None:
        """The kernel does not match "/tmp/ab/x" against the prefix "/tmp/a/"."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/tmp/a/", RW)]), PID)
        assert (RW, None) == (kernel_lookup(rule_set.file_rules, "/tmp/a/x"),
                              kernel_lookup(rule_set.file_rules, "/tmp/ab/x"))

    def test_same_path_twice_is_unioned(self) -> None:
        """Two rules for the same path store one entry with both accesses."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/run/", R), FileRule("/run/", Access.WRITE)]),
                                  PID)
        assert {"/run/": RW} == file_table(rule_set)

    def test_file_entries_use_the_policy_id(self) -> None:
        """Every file key carries the policy id it was compiled for."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/a", R)], baseline_on=True), 42)
        assert {42} == {decode_path_key(key)[1] for key in rule_set.file_rules}


class TestNetworkRules:
    """net4_rules / net6_rules: destinations and their port ranges."""

    def test_cidr_rule_key_bytes(self) -> None:
        """A /8 rule is keyed by prefixlen 32 + 8, the policy id and the network address."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", 443)]), PID)
        assert [NET4_KEY.pack(40, PID, bytes([10, 0, 0, 0]))] == list(rule_set.net4_rules)

    def test_cidr_rule_ports(self) -> None:
        """The value holds the rule's ports as one range each."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", 443)]), PID)
        assert {"10.0.0.0/8": [(443, 443)]} == net4(rule_set)

    def test_ports_value_bytes(self) -> None:
        """The value is count, pad and 16 (first, last) u16 pairs, unused ones zero."""
        rule_set = compile_policy(make_policy(egress=[cidr("127.0.0.1/32", 8080)]), PID)
        expected = struct.pack("<II", 1, 0) + struct.pack("<HH", 8080, 8080) + bytes(4 * 15)
        assert [expected] == list(rule_set.net4_rules.values())

    def test_host_address_prefixlen(self) -> None:
        """A /32 network is keyed with prefixlen 64."""
        rule_set = compile_policy(make_policy(egress=[cidr("127.0.0.1/32", 8080)]), PID)
        assert [(64, PID, bytes([127, 0, 0, 1]))] == [NET4_KEY.unpack(key) for key in rule_set.net4_rules]

    def test_ipv6_key_bytes(self) -> None:
        """An IPv6 rule is keyed by prefixlen 32 + prefix and the 16-byte address."""
        rule_set = compile_policy(make_policy(egress=[cidr("2001:db8::/32", 443)]), PID)
        expected = NET6_KEY.pack(64, PID, ipaddress.IPv6Address("2001:db8::").packed)
        assert [expected] == list(rule_set.net6_rules)

    def test_no_ports_means_any_port(self) -> None:
        """A rule without ports allows the single range 1-65535."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8")]), PID)
        assert {"10.0.0.0/8": ANY} == net4(rule_set)

    def test_ranges_are_sorted_and_merged(self) -> None:
        """Overlapping and adjacent ranges merge; the result is sorted by first port."""
        rule = cidr("10.0.0.0/8", 9000, (8081, 8090), 23, (8000, 8080), 22, (100, 200), (150, 300))
        rule_set = compile_policy(make_policy(egress=[rule]), PID)
        assert {"10.0.0.0/8": [(22, 23), (100, 300), (8000, 8090), (9000, 9000)]} == net4(rule_set)

    def test_range_inside_another_is_absorbed(self) -> None:
        """A range contained in another adds nothing."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", (1000, 2000), 1500)]), PID)
        assert {"10.0.0.0/8": [(1000, 2000)]} == net4(rule_set)

    def test_two_rules_for_one_network_share_an_entry(self) -> None:
        """Two rules for the same network merge their ports into one entry."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", 443), cidr("10.0.0.0/8", 80)]), PID)
        assert {"10.0.0.0/8": [(80, 80), (443, 443)]} == net4(rule_set)

    def test_narrow_network_carries_the_wider_networks_ports(self) -> None:
        """A /32 inside a /8 gets the /8's ports too; the /8 does not get the /32's."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", 80), cidr("10.1.2.3/32", 443)]), PID)
        assert {"10.0.0.0/8": [(80, 80)], "10.1.2.3/32": [(80, 80), (443, 443)]} == net4(rule_set)

    def test_union_over_nested_networks(self) -> None:
        """A network gets the ports of every wider network containing it, not of unrelated ones."""
        rules = [cidr("10.0.0.0/8", 1), cidr("10.1.0.0/16", 2), cidr("10.1.2.0/24", 3), cidr("192.168.0.0/16", 4)]
        rule_set = compile_policy(make_policy(egress=rules), PID)
        assert {
            "10.0.0.0/8": [(1, 1)],
            "10.1.0.0/16": [(1, 2)],
            "10.1.2.0/24": [(1, 3)],
            "192.168.0.0/16": [(4, 4)],
        } == net4(rule_set)

    def test_any_port_wider_network_opens_the_narrow_one(self) -> None:
        """A /32 inside a /8 that allows any port allows any port too."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8"), cidr("10.0.0.1/32", 443)]), PID)
        assert {"10.0.0.0/8": ANY, "10.0.0.1/32": ANY} == net4(rule_set)

    def test_ipv4_and_ipv6_are_kept_apart(self) -> None:
        """IPv4 rules go to net4, IPv6 rules to net6, and ::/0 does not widen an IPv4 rule."""
        rule_set = compile_policy(make_policy(egress=[cidr("::/0", 53), cidr("10.0.0.1/32", 443)]), PID)
        assert ({"10.0.0.1/32": [(443, 443)]}, {"::/0": [(53, 53)]}) == (net4(rule_set), net6(rule_set))

    def test_ipv6_union(self) -> None:
        """A /128 inside an IPv6 /32 carries the /32's ports."""
        rule_set = compile_policy(make_policy(egress=[cidr("2001:db8::/32", 80), cidr("2001:db8::1/128", 443)]),
                                  PID)
        assert {"2001:db8::/32": [(80, 80)], "2001:db8::1/128": [(80, 80), (443, 443)]} == net6(rule_set)

    def test_host_rule_uses_resolved_addresses(self) -> None:
        """A host rule becomes a /32 per IPv4 address and a /128 per IPv6 address."""
        hosts = {"api.example.com": [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("198.51.100.7"),
                                     ipaddress.ip_address("2001:db8::34")]}
        rule_set = compile_policy(make_policy(egress=[host("api.example.com", 443)]), PID, hosts)
        assert ({"93.184.216.34/32": [(443, 443)], "198.51.100.7/32": [(443, 443)]},
                {"2001:db8::34/128": [(443, 443)]}) == (net4(rule_set), net6(rule_set))

    def test_host_key_prefixlens(self) -> None:
        """Host addresses are keyed with prefixlen 32 + 32 (IPv4) and 32 + 128 (IPv6)."""
        hosts = {"h.example": [ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")]}
        rule_set = compile_policy(make_policy(egress=[host("h.example")]), PID, hosts)
        assert ([64], [160]) == ([NET4_KEY.unpack(k)[0] for k in rule_set.net4_rules],
                                 [NET6_KEY.unpack(k)[0] for k in rule_set.net6_rules])

    def test_unresolved_host_has_no_entry(self) -> None:
        """A host the mapping does not name gives no entry; other rules are unaffected."""
        rule_set = compile_policy(make_policy(egress=[host("nowhere.example", 443), cidr("10.0.0.0/8", 80)]), PID,
                                  {"other.example": [ipaddress.ip_address("192.0.2.1")]})
        assert ({"10.0.0.0/8": [(80, 80)]}, {}) == (net4(rule_set), net6(rule_set))

    def test_no_hosts_mapping_means_unresolved(self) -> None:
        """Without a hosts mapping host rules give no entries."""
        rule_set = compile_policy(make_policy(egress=[host("api.example.com", 443)]), PID)
        assert ({}, {}) == (net4(rule_set), net6(rule_set))

    def test_host_with_no_addresses_has_no_entry(self) -> None:
        """A host that resolved to nothing gives no entry."""
        rule_set = compile_policy(make_policy(egress=[host("api.example.com", 443)]), PID, {"api.example.com": []})
        assert ({}, {}) == (net4(rule_set), net6(rule_set))

    def test_host_address_inside_a_cidr_gets_its_ports(self) -> None:
        """A host address inside a cidr rule carries the cidr's ports as well."""
        hosts = {"api.example.com": [ipaddress.ip_address("10.1.2.3")]}
        rule_set = compile_policy(make_policy(egress=[host("api.example.com", 443), cidr("10.0.0.0/8", 80)]), PID,
                                  hosts)
        assert {"10.1.2.3/32": [(80, 80), (443, 443)], "10.0.0.0/8": [(80, 80)]} == net4(rule_set)

    def test_host_and_cidr_for_the_same_address_share_an_entry(self) -> None:
        """A host address equal to a /32 cidr rule merges into one entry."""
        hosts = {"api.example.com": [ipaddress.ip_address("192.0.2.1")]}
        rule_set = compile_policy(make_policy(egress=[host("api.example.com", 443), cidr("192.0.2.1/32", 22)]), PID,
                                  hosts)
        assert {"192.0.2.1/32": [(22, 22), (443, 443)]} == net4(rule_set)

    def test_sixteen_ranges_fit(self) -> None:
        """Sixteen separate ranges fill the value exactly."""
        ports = [1000 + 2 * i for i in range(16)]
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", *ports)]), PID)
        assert {"10.0.0.0/8": [(p, p) for p in ports]} == net4(rule_set)

    def test_more_than_sixteen_ranges_raise(self) -> None:
        """Seventeen separate ranges for one network raise CompileError."""
        ports = [1000 + 2 * i for i in range(17)]
        with pytest.raises(CompileError, match="17 port ranges"):
            compile_policy(make_policy(egress=[cidr("10.0.0.0/8", *ports)]), PID)

    def test_union_beyond_sixteen_ranges_raises(self) -> None:
        """Ports inherited from a wider network count: 16 + 1 for the narrow one raises."""
        wide = cidr("10.0.0.0/8", *[1000 + 2 * i for i in range(16)])
        with pytest.raises(CompileError, match="10.0.0.1/32"):
            compile_policy(make_policy(egress=[wide, cidr("10.0.0.1/32", 5000)]), PID)

    def test_adjacent_ports_merge_below_the_limit(self) -> None:
        """Seventeen adjacent ports merge into one range and compile."""
        rule_set = compile_policy(make_policy(egress=[cidr("10.0.0.0/8", *range(1000, 1017))]), PID)
        assert {"10.0.0.0/8": [(1000, 1016)]} == net4(rule_set)

    def test_no_egress_no_entries(self) -> None:
        """A policy without egress rules stores no network entries."""
        rule_set = compile_policy(make_policy(baseline_on=True), PID)
        assert ({}, {}) == (dict(rule_set.net4_rules), dict(rule_set.net6_rules))


class TestPolicySettings:
    """The value of map `policies`: mode and network action."""

    @pytest.mark.parametrize(("mode", "on_violation", "expected"), [
        (Mode.ENFORCE, NetAction.DENY, (0, 0)),
        (Mode.AUDIT, NetAction.DENY, (1, 0)),
        (Mode.ENFORCE, NetAction.KILL, (0, 1)),
        (Mode.AUDIT, NetAction.KILL, (1, 1)),
    ])
    def test_mode_and_action_codes(self, mode: Mode, on_violation: NetAction, expected: tuple[int, int]) -> None:
        """enforce/audit are 0/1 and deny/kill are 0/1."""
        assert expected == POLICY.unpack(compile_policy(make_policy(mode=mode, on_violation=on_violation), PID).policy)

    def test_settings_bytes(self) -> None:
        """audit + kill is the 8 bytes 01 00 00 00 01 00 00 00."""
        rule_set = compile_policy(make_policy(mode=Mode.AUDIT, on_violation=NetAction.KILL), PID)
        assert b"\x01\0\0\0\x01\0\0\0" == rule_set.policy


class TestFailClosedPolicy:
    """fail_closed_policy: what an unknown policy name gets."""

    def test_enforced_baseline_and_nothing_else(self) -> None:
        """It is named as asked, enforces, keeps the baseline and allows nothing of its own."""
        policy = fail_closed_policy("ghost")
        assert ("ghost", Mode.ENFORCE, True, (), (), NetAction.DENY, ()) == (
            policy.name, policy.mode, policy.baseline, policy.exec_allow, policy.file_allow, policy.on_violation,
            policy.egress)

    def test_source_explains_itself(self) -> None:
        """Its source says that no policy file defines the name."""
        assert "fail-closed" in fail_closed_policy("ghost").source

    def test_compiles_to_the_baseline_only(self) -> None:
        """Compiled, it is enforce/deny, the baseline exec and files, and no network."""
        rule_set = compile_policy(fail_closed_policy("ghost"), PID)
        assert (
            (0, 0), {path_key(PID, path) for path in baseline.EXEC}, baseline_file_table(), {}, {}
        ) == (
            POLICY.unpack(rule_set.policy), set(rule_set.exec_rules), file_table(rule_set),
            dict(rule_set.net4_rules), dict(rule_set.net6_rules),
        )


class TestFromYaml:
    """compile_policy on a parsed policy file."""

    def test_parsed_policy_compiles_end_to_end(self) -> None:
        """A YAML policy compiles to the expected exec, file, network and settings entries."""
        policy = parse_policy(
            "apiVersion: hostguard/v1\n"
            "kind: Policy\n"
            "name: fn\n"
            "mode: audit\n"
            "baseline: false\n"
            "exec: {allow: [/usr/local/bin/node]}\n"
            "files:\n"
            "  allow:\n"
            "    - /var/task/\n"
            "    - {path: /tmp/, access: read-write}\n"
            "network:\n"
            "  on_violation: kill\n"
            "  egress:\n"
            "    - {cidr: 127.0.0.0/8, ports: [8080]}\n"
            "    - {host: API.Example.com, ports: [443]}\n",
            "fn.yaml",
        )
        hosts = {"api.example.com": [ipaddress.ip_address("203.0.113.9")]}
        rule_set = compile_policy(policy, PID, hosts)
        assert (
            (1, 1),
            {"/usr/local/bin/node\0": 1},
            {"/usr/local/bin/node\0": R, "/usr/local/bin/node/": R, "/var/task/": R, "/tmp/": RW},
            {"127.0.0.0/8": [(8080, 8080)], "203.0.113.9/32": [(443, 443)]},
            {},
        ) == (
            POLICY.unpack(rule_set.policy), path_table(rule_set.exec_rules), file_table(rule_set), net4(rule_set),
            net6(rule_set),
        )

    def test_compilation_is_pure(self) -> None:
        """Compiling the same policy twice gives equal rule sets; another id changes only the keys."""
        policy = make_policy(exec_allow=["/bin/a"], file_allow=[FileRule("/d/", RW)], egress=[cidr("10.0.0.0/8")],
                             baseline_on=True)
        first, second, other = compile_policy(policy, PID), compile_policy(policy, PID), compile_policy(policy, 9)
        assert (first, file_table(first)) == (second, file_table(other, 9))



class TestExactRuleDirectoryForm:
    def test_exact_rule_does_not_grant_the_paths_under_it(self) -> None:
        """An exact rule "/data" allows the directory itself ("/data/"), not the files inside it."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data", R)]), PID)
        assert (R, None) == (kernel_lookup(rule_set.file_rules, "/data/"),
                             kernel_lookup(rule_set.file_rules, "/data/secret"))

    def test_exact_rule_does_not_widen_rules_under_it(self) -> None:
        """A read-write exact rule "/data" does not make the read rule "/data/config" writable."""
        rule_set = compile_policy(make_policy(file_allow=[FileRule("/data", RW), FileRule("/data/config", R)]), PID)
        assert R == kernel_lookup(rule_set.file_rules, "/data/config")


class TestBaselineExecReadable:
    def test_baseline_programs_are_readable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every program the policy may exec may be read, baseline programs included."""
        monkeypatch.setattr(baseline, "EXEC", ("/bin/busybox",))
        rule_set = compile_policy(make_policy(baseline_on=True), PID)
        assert R == kernel_lookup(rule_set.file_rules, "/bin/busybox")
