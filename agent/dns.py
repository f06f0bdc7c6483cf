"""Resolve the DNS host names that egress policies allow, and keep them resolved.

A policy rule such as ``{host: api.stripe.com, ports: [443]}`` can only be
enforced in the kernel as addresses, and the addresses behind a name change.
``Resolver`` is a small stub resolver (``/etc/hosts`` first, then the
nameservers of ``resolv.conf``; A and AAAA over UDP, TCP when the answer is
truncated) that, unlike ``socket.getaddrinfo``, reports the records' TTL, so
``HostWatcher`` knows when each name has to be looked up again.

The stdlib has no DNS client and the agent keeps its dependencies few, so the
wire format is done here, as pure functions (``build_query``,
``parse_response``) that tests can feed bytes directly.

Names are looked up as given (fully qualified): no ``search`` domains, no
``ndots``; a policy naming a host means exactly that host.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

__all__ = [
    "A",
    "AAAA",
    "CNAME",
    "NOERROR",
    "NXDOMAIN",
    "SERVFAIL",
    "Address",
    "DNSError",
    "HostWatcher",
    "MalformedResponse",
    "MismatchedResponse",
    "Resolution",
    "Resolver",
    "TruncatedResponse",
    "build_query",
    "parse_response",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Record types and response codes (RFC 1035 3.2.2, 4.1.1; RFC 3596).
A = 1
CNAME = 5
AAAA = 28
NOERROR = 0
SERVFAIL = 2
NXDOMAIN = 3

_CLASS_IN = 1
_FLAG_QR = 0x8000
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_MAX_NAME = 255  # wire length of a name, RFC 1035 2.3.4
_MAX_LABEL = 63
_MAX_POINTER_HOPS = 127  # more compression pointers than any real name needs: a loop
_MAX_CNAME_CHAIN = 16  # resolvers give up far earlier (BIND: 16 as well)
_QTYPE_NAMES = {A: "A", AAAA: "AAAA", CNAME: "CNAME"}
_RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_ADDRESS_LENGTHS = {A: 4, AAAA: 16}
_DEFAULT_NAMESERVER = ("127.0.0.1", 53)
_JOIN_TIMEOUT = 5.0

_Name = tuple[bytes, ...]  # lower-cased labels: DNS names compare case-insensitively


class DNSError(Exception):
    """A DNS message that cannot be used as the answer to our query."""


class MalformedResponse(DNSError):
    """The reply to our query is not valid DNS (bad lengths, pointer loop, CNAME loop...)."""


class MismatchedResponse(DNSError):
    """A packet that is not the reply to our query (other id or question): ignore it.

    Anything can arrive on a UDP port; only a reply that echoes our random id
    and our question may be believed, or an off-path attacker could steer
    policy addresses with a guessed packet.
    """


class TruncatedResponse(DNSError):
    """The server set TC: the answer did not fit in UDP and must be asked for over TCP."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """The addresses of one host name and until when they may be relied on."""

    host: str
    addresses: tuple[Address, ...]  # sorted, deduplicated; () when the name does not resolve
    expires_at: float  # clock() deadline: least TTL, clamped; failure/NXDOMAIN: now + negative_ttl
    source: str  # "hosts" | "dns" | "error: <why>"

    @property
    def ok(self) -> bool:
        """True unless the lookup failed (NXDOMAIN is an answer, not a failure)."""
        return not self.source.startswith("error")


# --- wire format -------------------------------------------------------------------


def _normalize(host: str) -> str:
    """The canonical spelling of a host name: lower case, without the root's trailing dot."""
    host = host.strip().lower()
    return host[:-1] if host.endswith(".") else host


def _encode_name(host: str) -> bytes:
    """Wire form of a name (length-prefixed labels); ValueError if it cannot be one."""
    host = _normalize(host)
    if not host:
        raise ValueError("empty host name")
    out = bytearray()
    for label in host.split("."):
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{host!r} is not an ASCII host name (use its xn-- form)") from None
        if not 1 <= len(raw) <= _MAX_LABEL:
            raise ValueError(f"{host!r} has an empty label or one longer than {_MAX_LABEL}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > _MAX_NAME:
        raise ValueError(f"{host!r} is longer than {_MAX_NAME} bytes on the wire")
    return bytes(out)


def _name_key(host: str) -> _Name:
    return tuple(label.encode("ascii").lower() for label in _normalize(host).split("."))


def build_query(host: str, qtype: int, query_id: int) -> bytes:
    """A recursive (RD) query for one name and type, class IN, no EDNS: what a stub sends."""
    if not 0 <= query_id <= 0xFFFF:
        raise ValueError(f"query id {query_id} does not fit in 16 bits")
    header = _HEADER.pack(query_id, _FLAG_RD, 1, 0, 0, 0)
    return header + _encode_name(host) + struct.pack("!HH", qtype, _CLASS_IN)


def _read_name(msg: bytes, offset: int) -> tuple[_Name, int]:
    """Decode the name at offset, following compression pointers; returns it and the offset after.

    Pointers may point anywhere, including at themselves, so the hops are
    counted: a hostile packet must not hang the agent.
    """
    labels: list[bytes] = []
    end: int | None = None  # where the name ends in the record: after the first pointer
    hops = 0
    wire_length = 1
    while True:
        if offset >= len(msg):
            raise MalformedResponse("name runs past the end of the message")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(msg):
                raise MalformedResponse("compression pointer runs past the end of the message")
            if end is None:
                end = offset + 2
            hops += 1
            if hops > _MAX_POINTER_HOPS:
                raise MalformedResponse("compression pointer loop")
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            continue
        if length & 0xC0:
            raise MalformedResponse(f"unsupported label type 0x{length & 0xC0:02x}")
        offset += 1
        if length == 0:
            return tuple(labels), offset if end is None else end
        label = msg[offset : offset + length]
        if len(label) < length:
            raise MalformedResponse("label runs past the end of the message")
        wire_length += 1 + length
        if wire_length > _MAX_NAME:
            raise MalformedResponse(f"name longer than {_MAX_NAME} bytes")
        labels.append(label.lower())
        offset += length


@dataclass(frozen=True, slots=True)
class _Record:
    name: _Name
    rtype: int
    ttl: int
    rdata: bytes | _Name  # raw for addresses, decoded for CNAME


def _read_records(msg: bytes, offset: int, count: int) -> list[_Record]:
    """The class IN records of one section; other classes are skipped."""
    records = []
    for _ in range(count):
        name, offset = _read_name(msg, offset)
        if offset + _RR_FIXED.size > len(msg):
            raise MalformedResponse("record header runs past the end of the message")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(msg, offset)
        offset += _RR_FIXED.size
        rdata_end = offset + rdlength
        if rdata_end > len(msg):
            raise MalformedResponse("record data runs past the end of the message")
        if ttl > 0x7FFFFFFF:
            ttl = 0  # RFC 2181 8: a TTL with the top bit set means zero
        if rclass == _CLASS_IN:
            rdata: bytes | _Name
            if rtype == CNAME:
                rdata, name_end = _read_name(msg, offset)
                if name_end > rdata_end:
                    raise MalformedResponse("CNAME target runs past its record")
            else:
                rdata = msg[offset:rdata_end]
                if rtype in _ADDRESS_LENGTHS and len(rdata) != _ADDRESS_LENGTHS[rtype]:
                    raise MalformedResponse(f"{_QTYPE_NAMES[rtype]} record of {rdlength} bytes")
            records.append(_Record(name, rtype, ttl, rdata))
        offset = rdata_end
    return records


def _sorted_unique(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """Canonical order (IPv4 first, then numeric) so equal sets compare equal as tuples."""
    return tuple(sorted(set(addresses), key=lambda a: (a.version, a)))


def parse_response(
    data: bytes, query_id: int, host: str, qtype: int
) -> tuple[tuple[Address, ...], int | None, int]:
    """Read the reply to ``build_query(host, qtype, query_id)``: ``(addresses, ttl, rcode)``.

    The answer section is followed from ``host`` through any CNAME chain to the
    records of ``qtype`` at its end; ``ttl`` is the least TTL along that path,
    None when there are no addresses (NXDOMAIN, NODATA, or an error rcode).

    Raises MismatchedResponse for a packet that is not this reply (ignore it and
    keep waiting), TruncatedResponse when TC is set (ask over TCP), and
    MalformedResponse when the reply is ours but unusable.
    """
    if qtype not in _ADDRESS_LENGTHS:
        raise ValueError(f"qtype {qtype}: only A and AAAA answers are read")
    if len(data) < _HEADER.size:
        raise MismatchedResponse("shorter than a DNS header")
    reply_id, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    if reply_id != query_id or not flags & _FLAG_QR or (flags >> 11) & 0xF != 0:
        raise MismatchedResponse("not a reply to this query")
    rcode = flags & 0xF
    offset = _HEADER.size
    want = _name_key(host)
    if qdcount == 0 and rcode not in (NOERROR, NXDOMAIN):
        return (), None, rcode  # FORMERR/SERVFAIL/REFUSED may come without the question
    if qdcount != 1:
        raise MismatchedResponse(f"{qdcount} questions in the reply")
    try:
        qname, offset = _read_name(data, offset)
    except MalformedResponse as exc:
        raise MismatchedResponse(f"unreadable question: {exc}") from None
    if offset + 4 > len(data):
        raise MismatchedResponse("question runs past the end of the message")
    reply_qtype, reply_qclass = struct.unpack_from("!HH", data, offset)
    offset += 4
    if (qname, reply_qtype, reply_qclass) != (want, qtype, _CLASS_IN):
        raise MismatchedResponse("the reply is for another question")
    if flags & _FLAG_TC:
        raise TruncatedResponse("the answer was truncated")
    if rcode != NOERROR:
        return (), None, rcode
    records = _read_records(data, offset, ancount)

    current, ttls, seen = want, [], {want}
    while True:
        matches = [r for r in records if r.name == current and r.rtype == qtype]
        if matches:
            ttls.extend(r.ttl for r in matches)
            raw = [r.rdata for r in matches if isinstance(r.rdata, bytes)]
            return _sorted_unique(ipaddress.ip_address(b) for b in raw), min(ttls), rcode
        alias = next((r for r in records if r.name == current and r.rtype == CNAME), None)
        if alias is None:
            return (), None, rcode  # NODATA: the name exists, without records of this type
        ttls.append(alias.ttl)
        current = cast(_Name, alias.rdata)  # _read_records decodes CNAME targets
        if current in seen:
            raise MalformedResponse("CNAME loop")
        seen.add(current)
        if len(seen) > _MAX_CNAME_CHAIN:
            raise MalformedResponse(f"CNAME chain longer than {_MAX_CNAME_CHAIN}")


# --- configuration files -----------------------------------------------------------

_T = TypeVar("_T")


class _ParsedFile(Generic[_T]):
    """A file parsed again only when it changed, so every lookup sees edits without re-reading."""

    def __init__(self, path: str, parse: Callable[[str], _T]) -> None:
        self._path = path
        self._parse = parse
        self._key: object = ()
        self._value: _T = parse("")
        self._lock = threading.Lock()

    def get(self) -> _T:
        try:
            st = os.stat(self._path)
            key: object = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        with self._lock:
            if key != self._key:
                try:
                    with open(self._path, encoding="utf-8", errors="replace") as f:
                        text = f.read()
                except OSError:
                    text = ""  # a missing or unreadable file means "no entries", as for libc
                self._value, self._key = self._parse(text), key
            return self._value


def _parse_hosts(text: str) -> dict[str, tuple[Address, ...]]:
    """``/etc/hosts``: ``address name [aliases...]``, ``#`` comments; names may repeat on lines."""
    found: dict[str, set[Address]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            found.setdefault(_normalize(name), set()).add(address)
    return {name: _sorted_unique(addresses) for name, addresses in found.items()}


def _parse_resolv_conf(text: str) -> list[tuple[str, int]]:
    """The ``nameserver`` lines of resolv.conf, in order; unusable ones are skipped, as by libc."""
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            servers.append((fields[1], 53))
    return servers


# --- resolver ----------------------------------------------------------------------


def _server_label(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sockaddr(server: tuple[str, int]) -> tuple[int, tuple]:
    """Address family and socket address of a numeric nameserver (IPv6 scope ids included)."""
    host, port = server
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
    )[0]
    return family, sockaddr


_Answer = tuple[tuple[Address, ...], int | None, int]  # parse_response's result
_Outcome = _Answer | str  # an answer, or why there is none


class Resolver:
    """Stub resolver: /etc/hosts first, then the nameservers of resolv.conf.

    A and AAAA are asked over UDP, again over TCP when the answer is truncated.

    Both files are re-read when they change. ``clock`` only dates expiries (tests
    pass a fake one); network timeouts always use real time. Never raises for
    network trouble: failures come back as ``source="error: ..."`` so a caller
    can keep what it had.
    """

    def __init__(
        self,
        hosts_file: str = "/etc/hosts",
        resolv_conf: str = "/etc/resolv.conf",
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 2.0,
        attempts: int = 2,
        min_ttl: float = 5.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        hosts_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers is not None:
            for server in nameservers:
                try:
                    _sockaddr(server)
                except (OSError, TypeError, ValueError):
                    why = f"nameserver {server!r}: want (numeric address, port)"
                    raise ValueError(why) from None
        if attempts < 1 or timeout <= 0 or min_ttl > max_ttl:
            raise ValueError("need attempts >= 1, timeout > 0 and min_ttl <= max_ttl")
        self._hosts = _ParsedFile(hosts_file, _parse_hosts)
        self._resolv = _ParsedFile(resolv_conf, _parse_resolv_conf)
        self._nameservers = list(nameservers) if nameservers is not None else None
        self.timeout = timeout
        self.attempts = attempts
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.hosts_ttl = hosts_ttl
        self.clock = clock

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        """The servers asked, in order: the explicit list, else resolv.conf's, else 127.0.0.1:53."""
        if self._nameservers is not None:
            return list(self._nameservers)
        return self._resolv.get() or [_DEFAULT_NAMESERVER]

    def resolve(self, host: str) -> Resolution:
        """Look ``host`` up: the hosts file decides alone if it names the host, else DNS.

        When only one of A/AAAA fails, the addresses of the other are returned
        with the error source, so a caller can use what is fresh and keep the rest.
        """
        name = _normalize(host)
        try:
            _encode_name(name)
        except ValueError as exc:
            why = f"error: invalid host name: {exc}"
            return Resolution(name, (), self.clock() + self.negative_ttl, why)
        in_hosts = self._hosts.get().get(name)
        if in_hosts:
            return Resolution(name, in_hosts, self.clock() + self.hosts_ttl, "hosts")

        outcomes: dict[int, _Outcome] = {A: "not asked", AAAA: "not asked"}
        pending = {A, AAAA}
        for _ in range(self.attempts):
            for server in self.nameservers:
                if not pending:
                    break
                for qtype, outcome in self._ask(server, name, sorted(pending)).items():
                    if isinstance(outcome, tuple) and outcome[2] not in (NOERROR, NXDOMAIN):
                        rcode = _RCODE_NAMES.get(outcome[2], f"rcode {outcome[2]}")
                        outcome = f"{rcode} from {_server_label(server)}"
                    outcomes[qtype] = outcome
                    if not isinstance(outcome, str):
                        pending.discard(qtype)

        now = self.clock()
        answers = [o for o in outcomes.values() if not isinstance(o, str)]
        addresses = _sorted_unique(a for found, _, _ in answers for a in found)
        if pending:
            reasons = {qtype: outcomes[qtype] for qtype in sorted(pending)}
            if len(set(reasons.values())) == 1 and len(reasons) > 1:
                why = next(iter(reasons.values()))
            else:
                why = "; ".join(f"{_QTYPE_NAMES[q]}: {r}" for q, r in reasons.items())
            return Resolution(name, addresses, now + self.negative_ttl, f"error: {why}")
        ttls = [ttl for _, ttl, _ in answers if ttl is not None]
        if not ttls:  # NXDOMAIN or no records of either type
            return Resolution(name, (), now + self.negative_ttl, "dns")
        ttl = min(max(float(min(ttls)), self.min_ttl), self.max_ttl)
        return Resolution(name, addresses, now + ttl, "dns")

    def _ask(self, server: tuple[str, int], name: str, qtypes: list[int]) -> dict[int, _Outcome]:
        """Send the queries for all ``qtypes`` at once over one UDP socket and collect the replies.

        Parallel, as libc does, so an unreachable server costs one timeout per
        attempt rather than one per record type.
        """
        ids: dict[int, int] = {}
        while len(ids) < len(qtypes):
            ids.setdefault(secrets.randbits(16), qtypes[len(ids)])
        by_type = {qtype: query_id for query_id, qtype in ids.items()}
        outcomes: dict[int, _Outcome] = {}
        truncated: list[int] = []
        label = _server_label(server)
        try:
            family, sockaddr = _sockaddr(server)
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(sockaddr)  # the kernel then drops datagrams from other sources
                for qtype in qtypes:
                    sock.send(build_query(name, qtype, by_type[qtype]))
                deadline = time.monotonic() + self.timeout
                while len(outcomes) + len(truncated) < len(qtypes):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    sock.settimeout(remaining)
                    try:
                        data = sock.recv(65535)
                    except TimeoutError:
                        break
                    qtype = ids.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
                    if qtype is None or qtype in outcomes or qtype in truncated:
                        continue
                    try:
                        outcomes[qtype] = parse_response(data, by_type[qtype], name, qtype)
                    except MismatchedResponse:
                        continue
                    except TruncatedResponse:
                        truncated.append(qtype)
                    except MalformedResponse as exc:
                        outcomes[qtype] = f"malformed reply from {label}: {exc}"
        except OSError as exc:
            why = f"{label}: {exc.strerror or exc}"
            for qtype in qtypes:
                outcomes.setdefault(qtype, why)
        for qtype in truncated:
            outcomes[qtype] = self._ask_tcp(server, name, qtype)
        for qtype in qtypes:
            outcomes.setdefault(qtype, f"timeout after {self.timeout:g}s from {label}")
        return outcomes

    def _ask_tcp(self, server: tuple[str, int], name: str, qtype: int) -> _Outcome:
        """One query over TCP (length-prefixed, RFC 1035 4.2.2), for answers too big for UDP."""
        label = _server_label(server)
        query_id = secrets.randbits(16)
        query = build_query(name, qtype, query_id)
        try:
            family, sockaddr = _sockaddr(server)
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
                sock.sendall(struct.pack("!H", len(query)) + query)
                deadline = time.monotonic() + self.timeout
                length = struct.unpack("!H", _recv_exactly(sock, 2, deadline))[0]
                data = _recv_exactly(sock, length, deadline)
        except TimeoutError:
            return f"TCP timeout after {self.timeout:g}s from {label}"
        except OSError as exc:
            return f"TCP {label}: {exc.strerror or exc}"
        try:
            return parse_response(data, query_id, name, qtype)
        except DNSError as exc:
            return f"bad TCP reply from {label}: {exc}"


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Read ``size`` bytes by ``deadline``; a peer closing early is an error, not a short answer."""
    chunks, got = [], 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(size - got)
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --- watcher -----------------------------------------------------------------------


def _keep_families(old: tuple[Address, ...], fresh: tuple[Address, ...]) -> tuple[Address, ...]:
    """After a failed lookup: per IP version, the fresh addresses if any came, else the old ones.

    An outage, or one of A/AAAA timing out, must not take addresses away from a
    running function; whatever did come back fresh is still used.
    """
    fresh_versions = {a.version for a in fresh}
    return _sorted_unique([*fresh, *(a for a in old if a.version not in fresh_versions)])


class HostWatcher:
    """Keeps a set of host names resolved and reports the mapping when it changes.

    ``on_change(mapping host -> tuple[Address, ...])`` is called whenever any
    host's addresses change, and once after the first resolution of all hosts.
    Host names are normalized (lower case, no trailing dot) and so are the
    mapping's keys. A failed refresh keeps the last good addresses and is
    reported to ``on_error(host, why)``; NXDOMAIN is an answer and empties the
    host. ``on_change`` gets a fresh dict each time; if it raises, the same
    change is offered again at the next refresh. Errors in the watcher thread
    (an on_change that raised) go to ``on_error`` with host ``""``; the watcher
    never logs. Calls are serialized: callbacks never run concurrently.
    """

    max_sleep = 1.0  # the thread wakes at least this often, so clock jumps cannot strand it

    def __init__(
        self,
        resolver: Resolver,
        on_change: Callable[[dict[str, tuple[Address, ...]]], None],
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self._resolver = resolver
        self._on_change = on_change
        self._on_error = on_error
        self._lock = threading.RLock()  # serializes set_hosts/refresh_due and their callbacks
        self._current: dict[str, tuple[Address, ...]] = {}
        self._expires: dict[str, float] = {}
        self._announced: dict[str, tuple[Address, ...]] | None = None
        self._snapshot: dict[str, tuple[Address, ...]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def addresses(self) -> dict[str, tuple[Address, ...]]:
        """The current mapping (a copy; safe to read from any thread)."""
        return dict(self._snapshot)

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """Replace the watched set; drop removed names, resolve new ones now.

        Synchronous, so a policy is in force with addresses right after it is
        loaded; on_change is called (from this thread) if the mapping changed.
        """
        if isinstance(hosts, str):
            raise TypeError("set_hosts takes an iterable of host names, not one string")
        wanted = list(dict.fromkeys(_normalize(h) for h in hosts))
        with self._lock:
            for host in set(self._current) - set(wanted):
                del self._current[host]
                del self._expires[host]
            for host in wanted:
                if host not in self._current:
                    self._apply(host, self._resolver.resolve(host))
            self._publish()
        self._wake.set()  # the earliest deadline may have moved

    def refresh_due(self) -> None:
        """Re-resolve every host whose expiry has passed; on_change if any addresses changed."""
        self._refresh(None)

    def _refresh(self, abort: threading.Event | None) -> None:
        with self._lock:
            now = self._resolver.clock()
            for host in [h for h, deadline in self._expires.items() if deadline <= now]:
                if abort is not None and abort.is_set():
                    break  # stop() is waiting; the rest stays due
                self._apply(host, self._resolver.resolve(host))
            self._publish()

    def next_deadline(self) -> float | None:
        """The earliest expiry among the watched hosts (clock() time), None when there are none."""
        with self._lock:
            return min(self._expires.values(), default=None)

    def start(self) -> None:
        """Refresh in a daemon thread from now on, each host when its TTL runs out."""
        if self._thread is not None:
            raise RuntimeError("HostWatcher already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="hostguard-dns-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread: at once while it sleeps, after the current lookup if it is resolving."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        while not self._stopping.is_set():
            deadline = self.next_deadline()
            wait = self.max_sleep if deadline is None else deadline - self._resolver.clock()
            if wait > 0:
                self._wake.wait(min(wait, self.max_sleep))
                self._wake.clear()
                continue
            try:
                self._refresh(self._stopping)
            except Exception as exc:  # an on_change that raised; it is retried next refresh
                self._report("", f"on_change failed: {exc!r}")
                self._stopping.wait(self.max_sleep)

    def _apply(self, host: str, resolution: Resolution) -> None:
        """Take one resolution into the mapping; on failure keep what was known."""
        if resolution.ok:
            self._current[host] = resolution.addresses
        else:
            self._current[host] = _keep_families(self._current.get(host, ()), resolution.addresses)
            self._report(host, resolution.source.removeprefix("error: "))
        self._expires[host] = resolution.expires_at

    def _publish(self) -> None:
        """Expose the mapping and announce it if it differs from the last one on_change accepted."""
        mapping = dict(self._current)
        self._snapshot = mapping
        if self._announced is None or mapping != self._announced:
            self._on_change(dict(mapping))
            self._announced = mapping

    def _report(self, host: str, why: str) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(host, why)
        except Exception:
            pass  # an error handler that fails must not stop resolution
