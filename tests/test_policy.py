"""Unit tests for agent.policy: parsing, validation and loading of policy files."""

from __future__ import annotations

import ipaddress
import pickle
import textwrap
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from agent.policy import (
    Access,
    EgressRule,
    FileRule,
    Mode,
    NetAction,
    Policy,
    PolicyError,
    PolicyErrors,
    PortRange,
    load_policy_dir,
    load_policy_file,
    load_policy_paths,
    parse_policy,
)

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"
SOURCE = "test.yaml"

# Lines 1-3 of every document built by doc(); the body starts on line 4.
HEADER = "apiVersion: hostguard/v1\nkind: Policy\nname: test\n"

FULL_POLICY = """\
apiVersion: hostguard/v1
kind: Policy
name: payments
mode: audit
baseline: false
exec:
  allow:
    - /usr/local/bin/node
    - /opt/tools/
files:
  allow:
    - /var/task/
    - {path: /tmp/, access: read-write}
    - {path: /etc/ssl/, access: read}
network:
  on_violation: kill
  egress:
    - {cidr: 127.0.0.0/8, ports: [8080]}
    - {host: API.Stripe.com, ports: [443]}
    - {cidr: "::1/128", ports: ["8000-8100", 9000, "53"]}
    - {cidr: 10.1.2.3}
    - {cidr: "2001:db8::1"}
"""


def doc(body: str = "") -> str:
    """A valid header followed by ``body`` (dedented), starting on line 4."""
    return HEADER + textwrap.dedent(body)


def errors_of(text: str, source: str = SOURCE) -> list[PolicyError]:
    """The errors parse_policy raises for ``text`` (fails if it parses)."""
    with pytest.raises(PolicyErrors) as info:
        parse_policy(text, source)
    return info.value.errors


def where(errors: list[PolicyError]) -> list[tuple[str, int, str]]:
    """(file, line, field) of each error, for compact comparisons."""
    return [(e.file, e.line, e.field) for e in errors]


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return the path."""
    path.write_text(text, encoding="utf-8")
    return path


def named(name: str, body: str = "") -> str:
    """A valid policy document called ``name``."""
    return f"apiVersion: hostguard/v1\nkind: Policy\nname: {name}\n" + body


class TestParsePolicy:
    """parse_policy on valid documents."""

    def test_full_policy_round_trips_to_exact_dataclasses(self) -> None:
        """Every field of a complete policy lands in the matching dataclass field."""
        expected = Policy(
            name="payments",
            mode=Mode.AUDIT,
            baseline=False,
            exec_allow=("/usr/local/bin/node", "/opt/tools/"),
            file_allow=(
                FileRule("/var/task/", Access.READ),
                FileRule("/tmp/", Access.READ | Access.WRITE),
                FileRule("/etc/ssl/", Access.READ),
            ),
            on_violation=NetAction.KILL,
            egress=(
                EgressRule(ipaddress.IPv4Network("127.0.0.0/8"), None, (PortRange(8080, 8080),)),
                EgressRule(None, "api.stripe.com", (PortRange(443, 443),)),
                EgressRule(
                    ipaddress.IPv6Network("::1/128"),
                    None,
                    (PortRange(8000, 8100), PortRange(9000, 9000), PortRange(53, 53)),
                ),
                EgressRule(ipaddress.IPv4Network("10.1.2.3/32"), None, ()),
                EgressRule(ipaddress.IPv6Network("2001:db8::1/128"), None, ()),
            ),
            source="some/dir/payments.yaml",
        )
        assert expected == parse_policy(FULL_POLICY, "some/dir/payments.yaml")

    def test_minimal_policy_gets_defaults(self) -> None:
        """A policy with only the required fields is enforcing, baselined, denying and empty."""
        expected = Policy(
            name="test",
            mode=Mode.ENFORCE,
            baseline=True,
            exec_allow=(),
            file_allow=(),
            on_violation=NetAction.DENY,
            egress=(),
            source=SOURCE,
        )
        assert expected == parse_policy(doc(), SOURCE)

    def test_file_access_defaults_to_read(self) -> None:
        """A files.allow mapping without access grants read only."""
        policy = parse_policy(doc("files:\n  allow:\n    - {path: /data/}\n"), SOURCE)
        assert (FileRule("/data/", Access.READ),) == policy.file_allow

    def test_network_without_on_violation_denies(self) -> None:
        """A network section without on_violation defaults to deny."""
        policy = parse_policy(doc("network:\n  egress: [{cidr: 10.0.0.0/8}]\n"), SOURCE)
        assert NetAction.DENY == policy.on_violation

    def test_empty_egress_list_means_no_egress(self) -> None:
        """egress: [] is accepted and yields no egress rules."""
        assert () == parse_policy(doc("network:\n  egress: []\n"), SOURCE).egress

    def test_empty_sections_yield_empty_tuples(self) -> None:
        """Empty mappings and lists are accepted and allow nothing extra."""
        policy = parse_policy(doc("exec: {}\nfiles:\n  allow: []\nnetwork: {}\n"), SOURCE)
        assert ((), (), ()) == (policy.exec_allow, policy.file_allow, policy.egress)

    @pytest.mark.parametrize(
        ("literal", "expected"),
        [("true", True), ("false", False), ("yes", True), ("off", False), ("True", True)],
    )
    def test_baseline_accepts_yaml_booleans(self, literal: str, expected: bool) -> None:
        """baseline takes any YAML 1.1 boolean spelling."""
        assert expected == parse_policy(doc(f"baseline: {literal}\n"), SOURCE).baseline

    def test_root_and_trailing_slash_paths_are_kept_verbatim(self) -> None:
        """"/" alone and trailing slashes are allowed and not normalised away."""
        policy = parse_policy(doc("exec:\n  allow: [/, /usr/bin/, /usr/bin/env]\n"), SOURCE)
        assert ("/", "/usr/bin/", "/usr/bin/env") == policy.exec_allow

    def test_path_of_exactly_250_bytes_is_accepted(self) -> None:
        """A path at the kernel key width limit is accepted."""
        path = "/" + "a" * 249
        assert (path,) == parse_policy(doc(f"exec:\n  allow: [{path}]\n"), SOURCE).exec_allow

    def test_host_is_lower_cased(self) -> None:
        """Host names are stored lower-cased."""
        policy = parse_policy(doc("network:\n  egress: [{host: Registry.NPMJS.org}]\n"), SOURCE)
        assert "registry.npmjs.org" == policy.egress[0].host

    def test_port_forms(self) -> None:
        """Ports may be ints, "N" strings or "N-M" ranges, including 1 and 65535."""
        text = doc('network:\n  egress: [{cidr: 0.0.0.0/0, ports: [1, "65535", "10-20", "7-7"]}]\n')
        expected = (PortRange(1, 1), PortRange(65535, 65535), PortRange(10, 20), PortRange(7, 7))
        assert expected == parse_policy(text, SOURCE).egress[0].ports

    def test_sixteen_port_entries_are_accepted(self) -> None:
        """A rule may list up to 16 port entries."""
        text = doc(f"network:\n  egress: [{{cidr: 0.0.0.0/0, ports: {list(range(1, 17))}}}]\n")
        assert 16 == len(parse_policy(text, SOURCE).egress[0].ports)

    def test_ports_with_leading_zero_are_decimal(self) -> None:
        """0443 means port 443, not the YAML 1.1 octal 291."""
        text = doc("network:\n  egress: [{cidr: 0.0.0.0/0, ports: [0443]}]\n")
        assert (PortRange(443, 443),) == parse_policy(text, SOURCE).egress[0].ports

    def test_single_label_host_is_accepted(self) -> None:
        """A one-label host name such as "localhost" is a valid DNS name."""
        policy = parse_policy(doc("network:\n  egress: [{host: localhost}]\n"), SOURCE)
        assert "localhost" == policy.egress[0].host

    def test_policy_is_frozen(self) -> None:
        """Parsed policies cannot be modified."""
        policy = parse_policy(doc(), SOURCE)
        with pytest.raises(FrozenInstanceError):
            policy.name = "other"  # type: ignore[misc]


TOO_LONG_PATH = "/" + "a" * 250
TOO_LONG_UTF8_PATH = "/" + "é" * 125  # 126 characters, 251 bytes
LONG_HOST = ".".join(["a" * 63] * 4)  # 255 characters
LONG_LABEL_HOST = "a" * 64 + ".example.com"

# (id, document, expected line, expected field, fragment of the message)
SINGLE_ERROR_CASES = [
    # document structure
    ("top-level-list", "- a\n- b\n", 1, "", "top level must be a mapping"),
    ("top-level-scalar", "hello\n", 1, "", "top level must be a mapping"),
    ("missing-apiVersion", "kind: Policy\nname: t\n", 1, "apiVersion", "required"),
    ("wrong-apiVersion", "apiVersion: hostguard/v2\nkind: Policy\nname: t\n", 1, "apiVersion",
     "'hostguard/v1'"),
    ("missing-kind", "apiVersion: hostguard/v1\nname: t\n", 1, "kind", "required"),
    ("wrong-kind", "apiVersion: hostguard/v1\nkind: Pollicy\nname: t\n", 2, "kind", "'Policy'"),
    ("missing-name", "apiVersion: hostguard/v1\nkind: Policy\n", 1, "name", "required"),
    ("duplicate-top-key", doc("mode: audit\nmode: enforce\n"), 5, "mode", "duplicate key"),
    ("duplicate-nested-key", doc("network:\n  egress: []\n  egress: []\n"), 6,
     "network.egress", "first defined on line 5"),
    ("duplicate-entry-key", doc("network:\n  egress:\n    - cidr: 10.0.0.0/8\n"
                                "      cidr: 10.0.0.0/16\n"), 7, "network.egress[0].cidr",
     "duplicate key"),
    ("non-scalar-key", doc("? [a, b]\n: c\n"), 4, "", "keys must be plain strings"),
    # unknown fields
    ("unknown-top", doc("exce: {}\n"), 4, "exce", "unknown field 'exce'"),
    ("unknown-exec", doc("exec:\n  alow: [/bin/sh]\n"), 5, "exec.alow", "did you mean 'allow'"),
    ("unknown-files", doc("files:\n  allowed: []\n"), 5, "files.allowed", "unknown field"),
    ("unknown-file-entry", doc("files:\n  allow:\n    - {path: /x, mode: rw}\n"), 6,
     "files.allow[0].mode", "unknown field"),
    ("unknown-network", doc("network:\n  ingress: []\n"), 5, "network.ingress", "unknown field"),
    ("unknown-egress", doc("network:\n  egress:\n    - {cidr: 10.0.0.0/8, port: [80]}\n"), 6,
     "network.egress[0].port", "did you mean 'ports'"),
    # name
    ("name-too-long", HEADER.replace("name: test", "name: " + "a" * 64), 3, "name", "1-63"),
    ("name-empty", HEADER.replace("name: test", 'name: ""'), 3, "name", "1-63"),
    ("name-upper", HEADER.replace("name: test", "name: Payments"), 3, "name", "lower-case"),
    ("name-trailing-dash", HEADER.replace("name: test", "name: pay-"), 3, "name", "lower-case"),
    ("name-leading-dot", HEADER.replace("name: test", "name: .pay"), 3, "name", "lower-case"),
    ("name-not-string", HEADER.replace("name: test", "name: 123"), 3, "name",
     "must be a string, got integer"),
    ("name-null", HEADER.replace("name: test", "name:"), 3, "name", "must be a string, got null"),
    # scalar choices and types
    ("mode-invalid", doc("mode: block\n"), 4, "mode", "'enforce' or 'audit'"),
    ("mode-not-string", doc("mode: on\n"), 4, "mode", "must be a string, got boolean"),
    ("baseline-string", doc('baseline: "true"\n'), 4, "baseline", "must be a boolean"),
    ("baseline-int", doc("baseline: 1\n"), 4, "baseline", "must be a boolean"),
    ("on-violation-invalid", doc("network:\n  on_violation: drop\n"), 5, "network.on_violation",
     "'deny' or 'kill'"),
    # section and list types
    ("exec-list", doc("exec: [/bin/sh]\n"), 4, "exec", "must be a mapping, got list"),
    ("exec-allow-string", doc("exec:\n  allow: /bin/sh\n"), 5, "exec.allow",
     "must be a list, got string"),
    ("exec-allow-null", doc("exec:\n  allow:\n"), 5, "exec.allow", "must be a list, got null"),
    ("exec-entry-int", doc("exec:\n  allow: [/bin/sh, 42]\n"), 5, "exec.allow[1]",
     "must be a string"),
    ("files-string", doc("files: /tmp/\n"), 4, "files", "must be a mapping"),
    ("files-allow-mapping", doc("files:\n  allow: {path: /tmp/}\n"), 5, "files.allow",
     "must be a list, got mapping"),
    ("files-entry-list", doc("files:\n  allow:\n    - [/tmp/]\n"), 6, "files.allow[0]",
     "a path string or a {path, access} mapping"),
    ("network-list", doc("network: []\n"), 4, "network", "must be a mapping"),
    ("egress-mapping", doc("network:\n  egress: {cidr: 10.0.0.0/8}\n"), 5, "network.egress",
     "must be a list"),
    ("egress-entry-string", doc("network:\n  egress: [10.0.0.0/8]\n"), 5, "network.egress[0]",
     "must be a mapping, got string"),
    # paths, in each position a path can appear
    ("exec-relative", doc("exec:\n  allow: [bin/sh]\n"), 5, "exec.allow[0]", "absolute"),
    ("exec-empty", doc('exec:\n  allow: [""]\n'), 5, "exec.allow[0]", "absolute"),
    ("exec-nul", doc('exec:\n  allow: ["/bin/s\\0h"]\n'), 5, "exec.allow[0]", "NUL"),
    ("exec-dot", doc("exec:\n  allow: [/usr/./bin/sh]\n"), 5, "exec.allow[0]", "'.' or '..'"),
    ("exec-dotdot", doc("exec:\n  allow: [/usr/bin/../sbin/]\n"), 5, "exec.allow[0]",
     "'.' or '..'"),
    ("exec-trailing-dot", doc("exec:\n  allow: [/usr/bin/.]\n"), 5, "exec.allow[0]",
     "'.' or '..'"),
    ("exec-double-slash", doc("exec:\n  allow: [/usr//bin/sh]\n"), 5, "exec.allow[0]", "'//'"),
    ("exec-too-long", doc(f"exec:\n  allow: [{TOO_LONG_PATH}]\n"), 5, "exec.allow[0]",
     "251 bytes long; the limit is 250 bytes"),
    ("exec-too-long-utf8", doc(f"exec:\n  allow: [{TOO_LONG_UTF8_PATH}]\n"), 5, "exec.allow[0]",
     "kernel"),
    ("file-string-relative", doc("files:\n  allow: [tmp/]\n"), 5, "files.allow[0]", "absolute"),
    ("file-string-dotdot", doc("files:\n  allow: [/tmp/../etc/]\n"), 5, "files.allow[0]",
     "'.' or '..'"),
    ("file-path-relative", doc("files:\n  allow:\n    - {path: tmp/, access: read}\n"), 6,
     "files.allow[0].path", "absolute"),
    ("file-path-too-long", doc(f"files:\n  allow:\n    - path: {TOO_LONG_PATH}\n"), 6,
     "files.allow[0].path", "250 bytes"),
    ("file-path-double-slash", doc("files:\n  allow:\n    - {path: //tmp/}\n"), 6,
     "files.allow[0].path", "'//'"),
    ("file-path-missing", doc("files:\n  allow:\n    - {access: read}\n"), 6,
     "files.allow[0].path", "required"),
    ("file-path-not-string", doc("files:\n  allow:\n    - {path: [/tmp/]}\n"), 6,
     "files.allow[0].path", "must be a string, got list"),
    ("file-access-invalid", doc("files:\n  allow:\n    - {path: /tmp/, access: write}\n"), 6,
     "files.allow[0].access", "'read' or 'read-write'"),
    # egress entries
    ("egress-both", doc("network:\n  egress:\n    - {cidr: 10.0.0.0/8, host: a.com}\n"), 6,
     "network.egress[0]", "not both"),
    ("egress-neither", doc("network:\n  egress:\n    - {ports: [80]}\n"), 6, "network.egress[0]",
     "one of 'cidr' or 'host'"),
    ("cidr-invalid", doc("network:\n  egress: [{cidr: 10.0.0.256/32}]\n"), 5,
     "network.egress[0].cidr", "not an IPv4 or IPv6 network"),
    ("cidr-garbage", doc("network:\n  egress: [{cidr: example.com}]\n"), 5,
     "network.egress[0].cidr", "not an IPv4 or IPv6 network"),
    ("cidr-host-bits", doc("network:\n  egress: [{cidr: 10.0.0.1/8}]\n"), 5,
     "network.egress[0].cidr", "host bits set; did you mean '10.0.0.0/8'"),
    ("cidr-host-bits-v6", doc('network:\n  egress: [{cidr: "2001:db8::1/32"}]\n'), 5,
     "network.egress[0].cidr", "did you mean '2001:db8::/32'"),
    ("cidr-not-string", doc("network:\n  egress: [{cidr: 10}]\n"), 5, "network.egress[0].cidr",
     "must be a string"),
    ("host-underscore", doc("network:\n  egress: [{host: my_host.com}]\n"), 5,
     "network.egress[0].host", "letters, digits, hyphens and dots"),
    ("host-wildcard", doc('network:\n  egress: [{host: "*.example.com"}]\n'), 5,
     "network.egress[0].host", "not a DNS name"),
    ("host-too-long", doc(f"network:\n  egress: [{{host: {LONG_HOST}}}]\n"), 5,
     "network.egress[0].host", "the limit is 253"),
    ("host-label-too-long", doc(f"network:\n  egress: [{{host: {LONG_LABEL_HOST}}}]\n"), 5,
     "network.egress[0].host", "the limit is 63"),
    ("host-empty-label", doc("network:\n  egress: [{host: api..com}]\n"), 5,
     "network.egress[0].host", "empty label"),
    ("host-trailing-dot", doc("network:\n  egress: [{host: api.com.}]\n"), 5,
     "network.egress[0].host", "empty label"),
    ("host-hyphen-edge", doc("network:\n  egress: [{host: -api.com}]\n"), 5,
     "network.egress[0].host", "hyphen"),
    ("host-ipv4", doc("network:\n  egress: [{host: 10.1.2.3}]\n"), 5, "network.egress[0].host",
     "use 'cidr'"),
    ("host-ipv6", doc('network:\n  egress: [{host: "::1"}]\n'), 5, "network.egress[0].host",
     "use 'cidr'"),
    ("host-ipv4-network", doc("network:\n  egress: [{host: 10.0.0.0/8}]\n"), 5,
     "network.egress[0].host", "use 'cidr'"),
    ("host-numeric-tld", doc("network:\n  egress: [{host: 10.1.2}]\n"), 5,
     "network.egress[0].host", "use 'cidr'"),
    ("host-empty", doc('network:\n  egress: [{host: ""}]\n'), 5, "network.egress[0].host",
     "not a DNS name"),
    # ports
    ("ports-empty", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: []}]\n"), 5,
     "network.egress[0].ports", "omit 'ports' to allow any port"),
    ("ports-too-many",
     doc(f"network:\n  egress: [{{cidr: 10.0.0.0/8, ports: {list(range(1, 18))}}}]\n"), 5,
     "network.egress[0].ports", "at most 16"),
    ("ports-not-list", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: 80}]\n"), 5,
     "network.egress[0].ports", "must be a list, got integer"),
    ("port-zero", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [0]}]\n"), 5,
     "network.egress[0].ports[0]", "out of range"),
    ("port-too-big", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [65536]}]\n"), 5,
     "network.egress[0].ports[0]", "out of range"),
    ("port-negative", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [-1]}]\n"), 5,
     "network.egress[0].ports[0]", "not a decimal port number"),
    ("port-string-garbage", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [http]}]\n"), 5,
     "network.egress[0].ports[0]", "not a port number or a 'first-last' range"),
    ("port-range-reversed", doc('network:\n  egress: [{cidr: 10.0.0.0/8, ports: ["90-80"]}]\n'),
     5, "network.egress[0].ports[0]", "greater than its end"),
    ("port-range-zero", doc('network:\n  egress: [{cidr: 10.0.0.0/8, ports: ["0-80"]}]\n'), 5,
     "network.egress[0].ports[0]", "out of range"),
    ("port-range-too-big", doc('network:\n  egress: [{cidr: 10.0.0.0/8, ports: ["80-70000"]}]\n'),
     5, "network.egress[0].ports[0]", "out of range"),
    ("port-range-spaces", doc('network:\n  egress: [{cidr: 10.0.0.0/8, ports: ["80 - 90"]}]\n'),
     5, "network.egress[0].ports[0]", "'first-last' range"),
    ("port-bool", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [true]}]\n"), 5,
     "network.egress[0].ports[0]", "got boolean"),
    ("port-float", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [80.5]}]\n"), 5,
     "network.egress[0].ports[0]", "got number"),
    ("port-sexagesimal", doc("network:\n  egress:\n    - cidr: 10.0.0.0/8\n      ports:\n"
                             "        - 80:30\n"), 8,
     "network.egress[0].ports[0]", "quoted 'first-last' string"),
    ("port-colon-range-in-flow", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [80:90]}]\n"),
     5, "network.egress[0].ports[0]", "'first-last' range"),
    ("port-underscore", doc("network:\n  egress: [{cidr: 10.0.0.0/8, ports: [8_080]}]\n"), 5,
     "network.egress[0].ports[0]", "not a decimal port number"),
    # whole-file problems
    ("empty-file", "", 1, "", "empty policy file"),
    ("only-comments", "# nothing here\n\n# still nothing\n", 1, "", "empty policy file"),
    ("empty-document", "---\n", 1, "", "empty policy file"),
    ("syntax-error", doc("exec:\n  allow: [/bin/sh\nfiles: {}\n"), 6, "", "YAML syntax error"),
    ("two-documents", doc("---\n") + HEADER, 4, "", "YAML syntax error"),
    ("control-character", doc("mode: \x07\n"), 4, "", "YAML syntax error"),
]


class TestValidationErrors:
    """parse_policy rejects invalid documents with precise file, line and field."""

    @pytest.mark.parametrize(
        ("text", "line", "field", "fragment"),
        [case[1:] for case in SINGLE_ERROR_CASES],
        ids=[case[0] for case in SINGLE_ERROR_CASES],
    )
    def test_single_error(self, text: str, line: int, field: str, fragment: str) -> None:
        """Each invalid document yields exactly one error at the expected place."""
        errors = errors_of(text)
        assert [(SOURCE, line, field)] == where(errors)
        assert fragment in errors[0].message

    def test_error_in_nested_list_points_at_the_scalar_line(self) -> None:
        """An error in network.egress[1].ports[0] carries that scalar's own line."""
        text = doc(
            """\
            network:
              egress:
                - cidr: 10.0.0.0/8
                  ports: [80]
                - host: example.com
                  ports:
                    - 99999
                    - 443
            """
        )
        assert [(SOURCE, 10, "network.egress[1].ports[0]")] == where(errors_of(text))

    def test_all_errors_in_a_file_are_reported_in_line_order(self) -> None:
        """Several problems in one file are all reported, not just the first."""
        text = textwrap.dedent(
            """\
            apiVersion: hostguard/v2
            kind: Policy
            name: Bad_Name
            mode: strict
            exec:
              allow:
                - relative/path
                - /ok
                - /a/../b
            files:
              allow:
                - {path: /tmp/, access: rw}
            network:
              on_violation: explode
              egress:
                - {cidr: 10.0.0.1/8}
                - {host: "1.2.3.4", ports: []}
            extra: 1
            """
        )
        expected = [
            (SOURCE, 1, "apiVersion"),
            (SOURCE, 3, "name"),
            (SOURCE, 4, "mode"),
            (SOURCE, 7, "exec.allow[0]"),
            (SOURCE, 9, "exec.allow[2]"),
            (SOURCE, 12, "files.allow[0].access"),
            (SOURCE, 14, "network.on_violation"),
            (SOURCE, 16, "network.egress[0].cidr"),
            (SOURCE, 17, "network.egress[1].host"),
            (SOURCE, 17, "network.egress[1].ports"),
            (SOURCE, 18, "extra"),
        ]
        assert expected == where(errors_of(text))

    def test_all_missing_required_fields_are_reported(self) -> None:
        """A mapping lacking every required field reports each of them."""
        assert [
            (SOURCE, 1, "apiVersion"),
            (SOURCE, 1, "kind"),
            (SOURCE, 1, "name"),
        ] == where(errors_of("mode: audit\n"))

    def test_errors_carry_the_given_source(self) -> None:
        """The source argument is used as the file of every error."""
        assert {"dir/x.yaml"} == {e.file for e in errors_of("mode: audit\n", "dir/x.yaml")}


class TestPolicyErrorFormat:
    """String forms of PolicyError and PolicyErrors."""

    def test_policy_error_str(self) -> None:
        """str(PolicyError) is 'file:line: field: message'."""
        error = PolicyError("p.yaml", 7, "exec.allow[0]", "bad path")
        assert "p.yaml:7: exec.allow[0]: bad path" == str(error)

    def test_policy_error_without_field(self) -> None:
        """A whole-file error leaves the field out of str()."""
        error = PolicyError("p.yaml", 1, "", "empty policy file")
        assert "p.yaml:1: empty policy file" == str(error)

    def test_policy_error_without_line(self) -> None:
        """An error with no line (unreadable file) leaves the line out of str()."""
        error = PolicyError("p.yaml", 0, "", "cannot read file: x")
        assert "p.yaml: cannot read file: x" == str(error)

    def test_policy_errors_str_joins_lines(self) -> None:
        """str(PolicyErrors) has one line per error, in order."""
        errors = PolicyErrors([
            PolicyError("a.yaml", 1, "name", "one"),
            PolicyError("b.yaml", 2, "mode", "two"),
        ])
        assert "a.yaml:1: name: one\nb.yaml:2: mode: two" == str(errors)

    def test_errors_survive_pickling(self) -> None:
        """PolicyErrors round-trips through pickle (e.g. across processes)."""
        original = PolicyErrors([PolicyError("a.yaml", 3, "name", "bad")])
        copy = pickle.loads(pickle.dumps(original))
        assert str(original) == str(copy)


class TestDataclasses:
    """Invariants enforced by the dataclasses themselves."""

    @pytest.mark.parametrize(("first", "last"), [(0, 10), (10, 9), (1, 65536)])
    def test_port_range_rejects_invalid_bounds(self, first: int, last: int) -> None:
        """A PortRange outside 1..65535 or with first > last cannot be built."""
        with pytest.raises(ValueError):
            PortRange(first, last)

    @pytest.mark.parametrize(
        ("network", "host"), [(None, None), (ipaddress.ip_network("10.0.0.0/8"), "a.com")]
    )
    def test_egress_rule_needs_exactly_one_target(self, network, host) -> None:
        """An EgressRule must have exactly one of network and host."""
        with pytest.raises(ValueError):
            EgressRule(network, host, ())

    def test_file_rule_needs_absolute_path(self) -> None:
        """A FileRule with a relative path cannot be built."""
        with pytest.raises(ValueError):
            FileRule("tmp/", Access.READ)

    def test_read_write_is_both_flags(self) -> None:
        """read-write access includes both READ and WRITE."""
        access = parse_policy(doc("files:\n  allow: [{path: /t/, access: read-write}]\n"), SOURCE)
        assert (True, True) == (
            Access.READ in access.file_allow[0].access,
            Access.WRITE in access.file_allow[0].access,
        )


class TestLoadPolicyFile:
    """load_policy_file reads one file."""

    def test_loads_file_and_records_source(self, tmp_path: Path) -> None:
        """The policy is parsed and its source is the path it was read from."""
        path = write(tmp_path / "p.yaml", FULL_POLICY)
        assert parse_policy(FULL_POLICY, str(path)) == load_policy_file(path)

    def test_accepts_string_path(self, tmp_path: Path) -> None:
        """A str path works as well as a Path."""
        path = write(tmp_path / "p.yaml", doc())
        assert str(path) == load_policy_file(str(path)).source

    def test_missing_file_is_reported(self, tmp_path: Path) -> None:
        """A file that cannot be read gives a single error naming it."""
        path = tmp_path / "missing.yaml"
        with pytest.raises(PolicyErrors) as info:
            load_policy_file(path)
        assert [(str(path), 0, "")] == where(info.value.errors)
        assert "cannot read file" in info.value.errors[0].message

    def test_yaml_syntax_error_reports_its_line(self, tmp_path: Path) -> None:
        """A YAML syntax error is reported at the line of the YAML mark."""
        path = write(
            tmp_path / "p.yaml",
            doc("network:\n  egress:\n    - {cidr: 10.0.0.0/8, ports: [80}\n"),
        )
        with pytest.raises(PolicyErrors) as info:
            load_policy_file(path)
        assert [(str(path), 6, "")] == where(info.value.errors)
        assert "YAML syntax error" in info.value.errors[0].message

    def test_invalid_utf8_reports_its_line(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are reported at the line they occur on."""
        path = tmp_path / "p.yaml"
        path.write_bytes(doc().encode() + b"mode: \xff\n")
        with pytest.raises(PolicyErrors) as info:
            load_policy_file(path)
        assert [(str(path), 4, "")] == where(info.value.errors)

    def test_utf8_bom_is_accepted(self, tmp_path: Path) -> None:
        """A leading UTF-8 byte order mark does not break parsing."""
        path = tmp_path / "p.yaml"
        path.write_bytes(b"\xef\xbb\xbf" + doc().encode())
        assert "test" == load_policy_file(path).name


class TestLoadPolicyDir:
    """load_policy_dir loads every policy file in a directory."""

    def test_loads_yaml_and_yml_sorted_ignoring_others(self, tmp_path: Path) -> None:
        """*.yaml and *.yml are loaded in name order; hidden, other and nested files are not."""
        write(tmp_path / "b.yml", named("bravo"))
        write(tmp_path / "a.yaml", named("alpha"))
        write(tmp_path / ".hidden.yaml", "not: [valid")
        write(tmp_path / "notes.txt", "not: [valid")
        write(tmp_path / "a.yaml.bak", "not: [valid")
        (tmp_path / "sub").mkdir()
        write(tmp_path / "sub" / "c.yaml", "not: [valid")
        (tmp_path / "dir.yaml").mkdir()
        policies = load_policy_dir(tmp_path)
        assert ["alpha", "bravo"] == list(policies)
        assert str(tmp_path / "b.yml") == policies["bravo"].source

    def test_empty_directory_gives_no_policies(self, tmp_path: Path) -> None:
        """A directory without policy files loads as an empty mapping."""
        assert {} == load_policy_dir(tmp_path)

    def test_bad_file_is_reported_and_good_file_is_not(self, tmp_path: Path) -> None:
        """With one good and one bad file, only the bad file's errors are raised."""
        write(tmp_path / "good.yaml", named("good"))
        bad = write(tmp_path / "bad.yaml", named("bad", "mode: strict\n"))
        with pytest.raises(PolicyErrors) as info:
            load_policy_dir(tmp_path)
        assert [(str(bad), 4, "mode")] == where(info.value.errors)

    def test_errors_of_all_bad_files_are_reported(self, tmp_path: Path) -> None:
        """Every bad file contributes its errors, in file order."""
        first = write(tmp_path / "1.yaml", named("one", "mode: x\n"))
        write(tmp_path / "2.yaml", named("two"))
        third = write(tmp_path / "3.yaml", "")
        with pytest.raises(PolicyErrors) as info:
            load_policy_dir(tmp_path)
        assert [(str(first), 4, "mode"), (str(third), 1, "")] == where(info.value.errors)

    def test_duplicate_policy_names_report_the_second_file(self, tmp_path: Path) -> None:
        """Two files with the same name: the error names the second file's name line."""
        write(tmp_path / "a.yaml", named("same"))
        second = write(tmp_path / "b.yaml", "# comment\n" + named("same"))
        with pytest.raises(PolicyErrors) as info:
            load_policy_dir(tmp_path)
        assert [(str(second), 4, "name")] == where(info.value.errors)
        assert str(tmp_path / "a.yaml") in info.value.errors[0].message

    def test_missing_directory_is_reported(self, tmp_path: Path) -> None:
        """A directory that cannot be listed gives one error naming it."""
        with pytest.raises(PolicyErrors) as info:
            load_policy_dir(tmp_path / "nope")
        assert [(str(tmp_path / "nope"), 0, "")] == where(info.value.errors)

    def test_file_instead_of_directory_is_reported(self, tmp_path: Path) -> None:
        """Passing a file to load_policy_dir is an error, not a silent file load."""
        path = write(tmp_path / "p.yaml", named("p"))
        with pytest.raises(PolicyErrors) as info:
            load_policy_dir(path)
        assert [(str(path), 0, "")] == where(info.value.errors)


class TestLoadPolicyPaths:
    """load_policy_paths loads a mix of files and directories."""

    def test_mixes_files_and_directories(self, tmp_path: Path) -> None:
        """Policies from explicit files and from directories are all returned, in order."""
        directory = tmp_path / "d"
        directory.mkdir()
        write(directory / "b.yaml", named("bravo"))
        write(directory / "c.yaml", named("charlie"))
        single = write(tmp_path / "single.policy", named("alpha"))
        policies = load_policy_paths([single, directory])
        assert ["alpha", "bravo", "charlie"] == list(policies)
        assert str(single) == policies["alpha"].source

    def test_duplicate_name_between_file_and_directory(self, tmp_path: Path) -> None:
        """A name used in a directory and in a separate file is an error in the later one."""
        directory = tmp_path / "d"
        directory.mkdir()
        write(directory / "a.yaml", named("same"))
        other = write(tmp_path / "other.yaml", named("same"))
        with pytest.raises(PolicyErrors) as info:
            load_policy_paths([directory, other])
        assert [(str(other), 3, "name")] == where(info.value.errors)

    def test_same_file_reached_twice_is_loaded_once(self, tmp_path: Path) -> None:
        """A file named directly and via its directory is not a duplicate of itself."""
        path = write(tmp_path / "a.yaml", named("alpha"))
        assert ["alpha"] == list(load_policy_paths([path, tmp_path]))

    def test_errors_from_files_and_directories_are_combined(self, tmp_path: Path) -> None:
        """A missing path and a bad file in a directory are reported together."""
        directory = tmp_path / "d"
        directory.mkdir()
        bad = write(directory / "bad.yaml", named("bad", "baseline: maybe\n"))
        missing = tmp_path / "missing.yaml"
        with pytest.raises(PolicyErrors) as info:
            load_policy_paths([missing, directory])
        assert [(str(missing), 0, ""), (str(bad), 4, "baseline")] == where(info.value.errors)


class TestShippedPolicies:
    """The example policies in the repository's policies/ directory."""

    def test_all_shipped_policies_validate(self) -> None:
        """Every file in policies/ loads without errors, one policy per expected name."""
        assert ["build", "payments", "static-site"] == sorted(load_policy_dir(REPO_POLICIES))

    def test_payments_allows_only_the_local_payments_api(self) -> None:
        """payments may reach only 127.0.0.1:8080 and is denied, not killed, otherwise."""
        policy = load_policy_dir(REPO_POLICIES)["payments"]
        expected = (
            (EgressRule(ipaddress.IPv4Network("127.0.0.1/32"), None, (PortRange(8080, 8080),)),),
            NetAction.DENY,
        )
        assert expected == (policy.egress, policy.on_violation)

    def test_build_reaches_only_registries_and_kills_otherwise(self) -> None:
        """build may reach the npm and PyPI registries on 443 and kills on violation."""
        policy = load_policy_dir(REPO_POLICIES)["build"]
        expected = (
            {("registry.npmjs.org", 443), ("pypi.org", 443), ("files.pythonhosted.org", 443)},
            NetAction.KILL,
        )
        actual = (
            {(rule.host, rule.ports[0].first) for rule in policy.egress},
            policy.on_violation,
        )
        assert expected == actual

    def test_static_site_is_read_only_without_egress(self) -> None:
        """static-site writes nowhere and has no egress."""
        policy = load_policy_dir(REPO_POLICIES)["static-site"]
        writable = [rule.path for rule in policy.file_allow if Access.WRITE in rule.access]
        assert ([], ()) == (writable, policy.egress)
