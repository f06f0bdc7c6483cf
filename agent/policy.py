"""Parse and validate hostguard policy files.

A policy says which programs a container may execute, which files it may open
and where it may connect to.  The agent compiles policies into eBPF map
entries, so a mistake here becomes a kernel-enforced mistake: a typo such as
``alow:`` would otherwise silently turn into "allow nothing" (or, worse, a
mis-parsed port into "allow the wrong thing").  This module is therefore
strict: unknown fields, duplicate keys, wrong types and ambiguous values are
all errors, and every error points at the exact file, line and field so an
operator can fix it without guessing.

To get line numbers we do not use ``yaml.safe_load``; we ``yaml.compose`` the
document with the safe loader and walk the node tree ourselves, interpreting
scalars by their resolved tag.  All problems in a file are collected and
reported together (:class:`PolicyErrors`), not just the first one.

File format (one policy per file)::

    apiVersion: hostguard/v1
    kind: Policy
    name: payments
    mode: enforce            # enforce (default) | audit
    baseline: true           # default true
    exec:
      allow: [/usr/local/bin/node]
    files:
      allow:
        - /var/task/                         # access defaults to read
        - {path: /tmp/, access: read-write}
    network:
      on_violation: deny     # deny (default) | kill
      egress:
        - {cidr: 127.0.0.0/8, ports: [8080]}
        - {host: api.stripe.com, ports: [443]}
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_PATH_BYTES",
    "MAX_PORT_ENTRIES",
    "Access",
    "EgressRule",
    "FileRule",
    "Mode",
    "NetAction",
    "Policy",
    "PolicyError",
    "PolicyErrors",
    "PortRange",
    "load_policy_dir",
    "load_policy_file",
    "load_policy_paths",
    "scan_policy_dir",
    "parse_policy",
]

API_VERSION = "hostguard/v1"
KIND = "Policy"
#: Width of the path keys in the kernel maps; longer paths cannot be enforced.
MAX_PATH_BYTES = 250
#: Maximum number of entries in one egress rule's ``ports`` list.
MAX_PORT_ENTRIES = 16
MAX_NAME_LENGTH = 63
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
POLICY_SUFFIXES = (".yaml", ".yml")

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", re.IGNORECASE)
_HOST_CHARS_RE = re.compile(r"[A-Za-z0-9.-]+")
_PORT_STR_RE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_DECIMAL_RE = re.compile(r"[0-9]+")

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL = _TAG + "str", _TAG + "int", _TAG + "bool", _TAG + "null"
_TAG_NAMES = {
    _STR: "string",
    _INT: "integer",
    _BOOL: "boolean",
    _NULL: "null",
    _TAG + "float": "number",
    _TAG + "timestamp": "timestamp",
    _TAG + "binary": "binary",
}

StrPath: TypeAlias = str | os.PathLike[str]
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class Mode(enum.Enum):
    """Whether violations are blocked (enforce) or only reported (audit)."""

    ENFORCE = "enforce"
    AUDIT = "audit"


class Access(enum.Flag):
    """File access rights granted by a file rule."""

    READ = 1
    WRITE = 2


class NetAction(enum.Enum):
    """What happens to a process that attempts disallowed egress."""

    DENY = "deny"
    KILL = "kill"


_ACCESS_VALUES = {"read": Access.READ, "read-write": Access.READ | Access.WRITE}


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive TCP/UDP port range, ``first <= last``, both in 1..65535."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= 65535:
            raise ValueError(f"invalid port range {self.first}-{self.last}")


@dataclass(frozen=True, slots=True)
class FileRule:
    """Access to one absolute path; a trailing "/" means everything under it."""

    path: str
    access: Access

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"file rule path must be absolute: {self.path!r}")


@dataclass(frozen=True, slots=True)
class EgressRule:
    """Allowed outbound destination: a network or a DNS host, plus ports.

    Exactly one of ``network`` and ``host`` is set; ``ports == ()`` means
    any port.
    """

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    host: str | None
    ports: tuple[PortRange, ...]

    def __post_init__(self) -> None:
        if (self.network is None) == (self.host is None):
            raise ValueError("exactly one of network and host must be set")


@dataclass(frozen=True, slots=True)
class Policy:
    """One validated policy file."""

    name: str
    mode: Mode
    baseline: bool
    exec_allow: tuple[str, ...]
    file_allow: tuple[FileRule, ...]
    on_violation: NetAction
    egress: tuple[EgressRule, ...]
    source: str


class PolicyError(Exception):
    """One problem in one policy file; str() is 'file:line: field: message'.

    ``field`` is a dotted path such as ``network.egress[1].ports[0]``; it is
    empty for problems with the file as a whole (unreadable, empty, YAML
    syntax), in which case str() is 'file:line: message'.  ``line`` is
    1-based; it is 0 only when the file could not be read at all, and then
    str() is 'file: message'.
    """

    file: str
    line: int
    field: str
    message: str

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        super().__init__(file, line, field, message)
        self.file = file
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}"


class PolicyErrors(Exception):
    """Every problem found while loading; .errors is a list[PolicyError]."""

    errors: list[PolicyError]

    def __init__(self, errors: Iterable[PolicyError]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def _line(node: Node) -> int:
    """1-based line on which ``node`` starts."""
    return node.start_mark.line + 1


def _describe(node: Node) -> str:
    """Human name of a node's type, for "must be X, got Y" messages."""
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return _TAG_NAMES.get(node.tag, f"value tagged {node.tag}")


class _Parser:
    """Walks one composed document, collecting errors and building a Policy."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[PolicyError] = []
        self.name_line = 1

    # -- error helpers -----------------------------------------------------

    def error(self, line: int, field: str, message: str) -> None:
        """Record one problem in this file."""
        self.errors.append(PolicyError(self.source, line, field, message))

    def type_error(self, node: Node, field: str, expected: str) -> None:
        """Record that ``node`` is not of the ``expected`` type."""
        got = _describe(node)
        hint = ""
        if expected == "a string" and isinstance(node, ScalarNode) and node.tag != _NULL:
            hint = " (quote the value)"
        self.error(_line(node), field, f"must be {expected}, got {got}{hint}")

    # -- generic node helpers ---------------------------------------------

    def fields(
        self, node: Node, field: str, allowed: Sequence[str]
    ) -> dict[str, Node] | None:
        """Value nodes of a mapping by key; reports unknown and duplicate keys.

        Returns None (after reporting) when ``node`` is not a mapping.
        """
        if not isinstance(node, MappingNode):
            if field:
                self.type_error(node, field, "a mapping")
            else:
                self.error(
                    _line(node), "", f"the top level must be a mapping, got {_describe(node)}"
                )
            return None
        found: dict[str, Node] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(_line(key_node), field, "mapping keys must be plain strings")
                continue
            key = key_node.value
            sub = f"{field}.{key}" if field else key
            if key in first_line:
                self.error(
                    _line(key_node), sub,
                    f"duplicate key (first defined on line {first_line[key]})",
                )
                continue
            first_line[key] = _line(key_node)
            if key not in allowed:
                message = f"unknown field {key!r}"
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
                else:
                    message += f" (expected one of: {', '.join(allowed)})"
                self.error(_line(key_node), sub, message)
                continue
            found[key] = value_node
        return found

    def sequence(self, node: Node, field: str) -> list[Node] | None:
        """Items of a list node, or None (after reporting) for other nodes."""
        if not isinstance(node, SequenceNode):
            self.type_error(node, field, "a list")
            return None
        return list(node.value)

    def string(self, node: Node, field: str) -> str | None:
        """Value of a string scalar, or None (after reporting) otherwise."""
        if not isinstance(node, ScalarNode) or node.tag != _STR:
            self.type_error(node, field, "a string")
            return None
        value: str = node.value
        return value

    def choice(self, node: Node, field: str, choices: Sequence[str]) -> str | None:
        """A string that must be one of ``choices``."""
        value = self.string(node, field)
        if value is None:
            return None
        if value not in choices:
            allowed = " or ".join(repr(c) for c in choices)
            self.error(_line(node), field, f"must be {allowed}, got {value!r}")
            return None
        return value

    def boolean(self, node: Node, field: str) -> bool | None:
        """Value of a YAML boolean scalar (true/false, yes/no, on/off)."""
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.type_error(node, field, "a boolean (true or false)")
            return None
        value: bool = yaml.constructor.SafeConstructor.bool_values[node.value.lower()]
        return value

    # -- the document --------------------------------------------------------

    def policy(self, root: Node) -> Policy | None:
        top = self.fields(
            root, "",
            ("apiVersion", "kind", "name", "mode", "baseline", "exec", "files", "network"),
        )
        if top is None:
            return None
        for key in ("apiVersion", "kind", "name"):
            if key not in top:
                self.error(_line(root), key, "required field is missing")

        if "apiVersion" in top:
            self.choice(top["apiVersion"], "apiVersion", (API_VERSION,))
        if "kind" in top:
            self.choice(top["kind"], "kind", (KIND,))
        name = self.name(top["name"]) if "name" in top else None

        mode = Mode.ENFORCE
        if "mode" in top:
            mode_value = self.choice(top["mode"], "mode", [m.value for m in Mode])
            mode = Mode(mode_value) if mode_value else mode
        baseline = True
        if "baseline" in top:
            baseline_value = self.boolean(top["baseline"], "baseline")
            baseline = baseline_value if baseline_value is not None else baseline

        exec_allow = self.exec_section(top["exec"]) if "exec" in top else ()
        file_allow = self.files_section(top["files"]) if "files" in top else ()
        on_violation = NetAction.DENY
        egress: tuple[EgressRule, ...] = ()
        if "network" in top:
            on_violation, egress = self.network_section(top["network"])

        if self.errors or name is None:
            return None
        return Policy(
            name=name,
            mode=mode,
            baseline=baseline,
            exec_allow=exec_allow,
            file_allow=file_allow,
            on_violation=on_violation,
            egress=egress,
            source=self.source,
        )

    def name(self, node: Node) -> str | None:
        self.name_line = _line(node)
        value = self.string(node, "name")
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_NAME_LENGTH:
            self.error(
                _line(node), "name",
                f"must be 1-{MAX_NAME_LENGTH} characters long, got {len(value)}",
            )
            return None
        if not _NAME_RE.fullmatch(value):
            self.error(
                _line(node), "name",
                f"{value!r} is not a valid name: use lower-case letters, digits, "
                "'.', '_' and '-', starting and ending with a letter or digit",
            )
            return None
        return value

    def path(self, node: Node, field: str) -> str | None:
        """An absolute, already-normal path; a trailing "/" is kept (prefix)."""
        value = self.string(node, field)
        if value is None:
            return None
        problem = _path_problem(value)
        if problem:
            self.error(_line(node), field, problem)
            return None
        return value

    def exec_section(self, node: Node) -> tuple[str, ...]:
        section = self.fields(node, "exec", ("allow",))
        if not section or "allow" not in section:
            return ()
        items = self.sequence(section["allow"], "exec.allow") or []
        paths = (self.path(item, f"exec.allow[{i}]") for i, item in enumerate(items))
        return tuple(p for p in paths if p is not None)

    def files_section(self, node: Node) -> tuple[FileRule, ...]:
        section = self.fields(node, "files", ("allow",))
        if not section or "allow" not in section:
            return ()
        items = self.sequence(section["allow"], "files.allow") or []
        rules = (self.file_rule(item, f"files.allow[{i}]") for i, item in enumerate(items))
        return tuple(r for r in rules if r is not None)

    def file_rule(self, node: Node, field: str) -> FileRule | None:
        if isinstance(node, ScalarNode):
            path = self.path(node, field)
            return FileRule(path, Access.READ) if path else None
        if not isinstance(node, MappingNode):
            self.type_error(node, field, "a path string or a {path, access} mapping")
            return None
        entry = self.fields(node, field, ("path", "access"))
        assert entry is not None
        path = None
        if "path" in entry:
            path = self.path(entry["path"], f"{field}.path")
        else:
            self.error(_line(node), f"{field}.path", "required field is missing")
        access = Access.READ
        if "access" in entry:
            value = self.choice(entry["access"], f"{field}.access", tuple(_ACCESS_VALUES))
            access = _ACCESS_VALUES[value] if value else access
        return FileRule(path, access) if path else None

    def network_section(self, node: Node) -> tuple[NetAction, tuple[EgressRule, ...]]:
        on_violation = NetAction.DENY
        section = self.fields(node, "network", ("on_violation", "egress"))
        if not section:
            return on_violation, ()
        if "on_violation" in section:
            value = self.choice(
                section["on_violation"], "network.on_violation", [a.value for a in NetAction]
            )
            on_violation = NetAction(value) if value else on_violation
        rules: list[EgressRule] = []
        if "egress" in section:
            items = self.sequence(section["egress"], "network.egress") or []
            for i, item in enumerate(items):
                rule = self.egress_rule(item, f"network.egress[{i}]")
                if rule is not None:
                    rules.append(rule)
        return on_violation, tuple(rules)

    def egress_rule(self, node: Node, field: str) -> EgressRule | None:
        entry = self.fields(node, field, ("cidr", "host", "ports"))
        if entry is None:
            return None
        network: IPNetwork | None = None
        host: str | None = None
        ok = True
        if "cidr" in entry and "host" in entry:
            self.error(_line(node), field, "must have exactly one of 'cidr' or 'host', not both")
            ok = False
        elif "cidr" not in entry and "host" not in entry:
            self.error(_line(node), field, "must have one of 'cidr' or 'host'")
            ok = False
        if "cidr" in entry:
            network = self.cidr(entry["cidr"], f"{field}.cidr")
            ok = ok and network is not None
        if "host" in entry:
            host = self.host(entry["host"], f"{field}.host")
            ok = ok and host is not None
        ports: tuple[PortRange, ...] = ()
        if "ports" in entry:
            parsed = self.ports(entry["ports"], f"{field}.ports")
            ok = ok and parsed is not None
            ports = parsed or ()
        return EgressRule(network, host, ports) if ok else None

    def cidr(self, node: Node, field: str) -> IPNetwork | None:
        value = self.string(node, field)
        if value is None:
            return None
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            self.error(
                _line(node), field,
                f"{value!r} is not an IPv4 or IPv6 network or address",
            )
        else:
            self.error(
                _line(node), field,
                f"{value!r} has host bits set; did you mean {str(loose)!r}?",
            )
        return None

    def host(self, node: Node, field: str) -> str | None:
        value = self.string(node, field)
        if value is None:
            return None
        problem = _host_problem(value)
        if problem:
            self.error(_line(node), field, problem)
            return None
        return value.lower()

    def ports(self, node: Node, field: str) -> tuple[PortRange, ...] | None:
        items = self.sequence(node, field)
        if items is None:
            return None
        if not items:
            self.error(_line(node), field, "must not be empty; omit 'ports' to allow any port")
            return None
        if len(items) > MAX_PORT_ENTRIES:
            self.error(
                _line(node), field,
                f"has {len(items)} entries; at most {MAX_PORT_ENTRIES} are allowed per rule",
            )
            return None
        ranges = [self.port(item, f"{field}[{i}]") for i, item in enumerate(items)]
        if any(r is None for r in ranges):
            return None
        return tuple(r for r in ranges if r is not None)

    def port(self, node: Node, field: str) -> PortRange | None:
        line = _line(node)
        if isinstance(node, ScalarNode) and node.tag == _INT:
            # YAML 1.1 also reads 0443 (octal), 8_080 and 80:90 (base 60) as
            # integers; accept plain decimal only so nothing surprising results.
            if not _DECIMAL_RE.fullmatch(node.value):
                self.error(
                    line, field,
                    f"{node.value!r} is not a decimal port number; "
                    "write a range as a quoted 'first-last' string",
                )
                return None
            first = last = int(node.value, 10)
        elif isinstance(node, ScalarNode) and node.tag == _STR:
            match = _PORT_STR_RE.fullmatch(node.value)
            if not match:
                self.error(
                    line, field,
                    f"{node.value!r} is not a port number or a 'first-last' range",
                )
                return None
            first = int(match.group(1), 10)
            last = int(match.group(2) or match.group(1), 10)
        else:
            self.type_error(node, field, "a port number or a 'first-last' string")
            return None
        for port in (first, last):
            if not 1 <= port <= 65535:
                self.error(line, field, f"port {port} is out of range 1-65535")
                return None
        if first > last:
            self.error(line, field, f"range start {first} is greater than its end {last}")
            return None
        return PortRange(first, last)


def _path_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable policy path, or None if it is."""
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path (it must start with '/')"
    if "\0" in path:
        return "path must not contain a NUL character"
    if "//" in path:
        return f"{path!r} contains '//'; write a single '/'"
    components = path.split("/")[1:]
    if components and components[-1] == "":
        components.pop()  # trailing "/" means "everything under"
    if any(c in (".", "..") for c in components):
        return f"{path!r} contains a '.' or '..' component; write the path without it"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "path contains characters that cannot be encoded as UTF-8"
    if size > MAX_PATH_BYTES:
        return (
            f"path is {size} bytes long; the limit is {MAX_PATH_BYTES} bytes "
            "(UTF-8) because that is the width of the kernel's path keys"
        )
    return None


def _host_problem(host: str) -> str | None:
    """Why ``host`` is not an acceptable DNS name, or None if it is."""
    for parse in (ipaddress.ip_address, ipaddress.ip_network):
        try:
            parse(host)
        except ValueError:
            continue
        return f"{host!r} is an IP address, not a host name; use 'cidr' for addresses"
    if not _HOST_CHARS_RE.fullmatch(host):
        return (
            f"{host!r} is not a DNS name: use only letters, digits, hyphens and dots"
        )
    if len(host) > MAX_HOST_LENGTH:
        return f"host name is {len(host)} characters long; the limit is {MAX_HOST_LENGTH}"
    labels = host.split(".")
    for label in labels:
        if not label:
            return f"{host!r} has an empty label (leading, trailing or doubled '.')"
        if len(label) > MAX_LABEL_LENGTH:
            return (
                f"label {label[:20]!r}... is {len(label)} characters long; "
                f"the limit is {MAX_LABEL_LENGTH}"
            )
        if not _LABEL_RE.fullmatch(label):
            return f"label {label!r} must not start or end with a hyphen"
    if labels[-1].isdigit():
        return f"{host!r} looks like an IP address; use 'cidr' for addresses"
    return None


def _parse(text: str, source: str) -> tuple[Policy, int]:
    """Parse one policy; returns it with the line of its ``name`` field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise PolicyErrors(
            [PolicyError(source, line, "", f"YAML syntax error: {detail}")]
        ) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise PolicyErrors(
            [PolicyError(
                source, line, "",
                f"YAML syntax error: character {exc.character!r} is not allowed",
            )]
        ) from exc
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks all others
        raise PolicyErrors([PolicyError(source, 1, "", f"YAML error: {exc}")]) from exc

    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL and not root.value):
        raise PolicyErrors([PolicyError(source, 1, "", "empty policy file")])

    parser = _Parser(source)
    policy = parser.policy(root)
    if policy is None:
        raise PolicyErrors(sorted(parser.errors, key=lambda e: e.line))
    return policy, parser.name_line


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def parse_policy(text: str, source: str) -> Policy:
    """Parse and validate the YAML ``text`` of one policy.

    ``source`` names the file in errors and is stored in ``Policy.source``.
    Raises :class:`PolicyErrors` listing every problem found.
    """
    return _parse(text, source)[0]


def _read(path: StrPath) -> tuple[Policy, int]:
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyErrors([PolicyError(source, 0, "", f"cannot read file: {reason}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyErrors([PolicyError(source, line, "", "file is not valid UTF-8")]) from exc
    return _parse(text, source)


def load_policy_file(path: StrPath) -> Policy:
    """Read, parse and validate one policy file.

    Raises :class:`PolicyErrors`, also for unreadable files and YAML syntax
    errors.
    """
    return _read(path)[0]


def _policy_files(directory: StrPath) -> list[Path]:
    """The policy files of ``directory``: *.yaml/*.yml, sorted, not hidden."""
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyErrors(
            [PolicyError(os.fspath(directory), 0, "", f"cannot read directory: {reason}")]
        ) from exc
    return [
        entry
        for entry in entries
        if entry.suffix in POLICY_SUFFIXES
        and not entry.name.startswith(".")
        and not entry.is_dir()
    ]


def _load_files(files: Iterable[Path], errors: list[PolicyError]) -> dict[str, Policy]:
    """Load ``files`` in order, appending all problems to ``errors``."""
    policies: dict[str, Policy] = {}
    seen: set[Path] = set()
    for file in files:
        key = file.resolve()
        if key in seen:  # the same file named twice (e.g. directly and via its dir)
            continue
        seen.add(key)
        try:
            policy, name_line = _read(file)
        except PolicyErrors as exc:
            errors.extend(exc.errors)
            continue
        if policy.name in policies:
            errors.append(PolicyError(
                policy.source, name_line, "name",
                f"duplicate policy name {policy.name!r} "
                f"(already defined in {policies[policy.name].source})",
            ))
            continue
        policies[policy.name] = policy
    return policies


def load_policy_dir(directory: StrPath) -> dict[str, Policy]:
    """Load every policy file in ``directory`` (not recursive), keyed by name.

    Files are *.yaml and *.yml, in sorted order; hidden files are ignored.
    Raises :class:`PolicyErrors` with the errors of all bad files, including
    a policy name used by more than one file.
    """
    errors: list[PolicyError] = []
    policies = _load_files(_policy_files(directory), errors)
    if errors:
        raise PolicyErrors(errors)
    return policies


def scan_policy_dir(directory: StrPath) -> tuple[dict[str, Policy], list[PolicyError]]:
    """Like :func:`load_policy_dir`, but returns the good policies beside the errors.

    For a running agent, one bad file must not take the others down with it.
    """
    errors: list[PolicyError] = []
    try:
        files = _policy_files(directory)
    except PolicyErrors as exc:
        return {}, exc.errors
    return _load_files(files, errors), errors


def load_policy_paths(paths: Iterable[StrPath]) -> dict[str, Policy]:
    """Load policy files and/or directories (mixed), keyed by policy name.

    A file is loaded whatever its extension; a directory contributes its
    policy files as in :func:`load_policy_dir`.  A file reached twice is
    loaded once.  Raises :class:`PolicyErrors` with every problem found.
    """
    errors: list[PolicyError] = []
    files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            try:
                files.extend(_policy_files(p))
            except PolicyErrors as exc:
                errors.extend(exc.errors)
        else:
            files.append(p)
    policies = _load_files(files, errors)
    if errors:
        raise PolicyErrors(errors)
    return policies
