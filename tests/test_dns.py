"""Unit tests for agent.dns: wire format, the stub resolver and the host watcher.

Nothing here talks to a real resolver: a fake DNS server (UDP and TCP on one
loopback port, in a thread) answers from a dict, and expiries run on a fake clock.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.dns import (
    AAAA,
    NOERROR,
    NXDOMAIN,
    A,
    HostWatcher,
    MalformedResponse,
    MismatchedResponse,
    Resolution,
    Resolver,
    TruncatedResponse,
    build_query,
    parse_response,
)

ip = ipaddress.ip_address
T0 = 1000.0


# --- helpers -------------------------------------------------------------------------


def wire(name: str) -> bytes:
    """Uncompressed wire form of a name, written independently of agent.dns."""
    labels = [label.encode() for label in name.split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One class IN resource record with an already encoded owner."""
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def reply(
    query_id: int, name: str, qtype: int, answers: list[bytes], rcode: int = 0, flags: int = 0x8180
) -> bytes:
    """A reply message: header, the question for name/qtype, then the given answer records."""
    header = struct.pack("!HHHHHH", query_id, flags | rcode, 1, len(answers), 0, 0)
    return header + wire(name) + struct.pack("!HH", qtype, 1) + b"".join(answers)


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDNS:
    """A DNS server on 127.0.0.1 (UDP and TCP, same port) answering from ``records``.

    ``records`` maps a name to ``(type, value, ttl)`` tuples, type "A", "AAAA" or
    "CNAME"; unknown names get NXDOMAIN. ``mode`` is "answer", "timeout" (stay
    silent) or "servfail"; queries of a type in ``silent_types`` go unanswered.
    UDP answers over 512 bytes are sent truncated (TC). With ``spoof`` set, two
    wrong packets (other id, other question) precede each UDP answer. Every query
    is logged in ``queries`` as ``(transport, name, qtype)``.
    """

    TYPES = {"A": A, "AAAA": AAAA, "CNAME": 5}

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, str, int]]] = {}
        self.mode = "answer"
        self.spoof = False
        self.silent_types: set[int] = set()
        self.queries: list[tuple[str, str, int]] = []
        self._udp, self._tcp = self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._udp.getsockname()[1])

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(2)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()

    @staticmethod
    def _bind() -> tuple[socket.socket, socket.socket]:
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen()
            return udp, tcp
        raise RuntimeError("no free port for both UDP and TCP")

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._udp, self._tcp, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            if self._udp in ready:
                query, peer = self._udp.recvfrom(65535)
                answer = self._answer(query, "udp")
                if answer is not None:
                    if self.spoof:
                        self._udp.sendto(bytes([query[0] ^ 0xFF]) + answer[1:], peer)
                        name_end = query.index(b"\0", 12)
                        qtype = struct.unpack_from("!H", query, name_end + 1)[0]
                        evil = reply(int.from_bytes(query[:2], "big"), "evil.example", qtype,
                                     [rr(b"\xc0\x0c", A, 300, bytes([203, 0, 113, 66]))])
                        self._udp.sendto(evil, peer)
                    if len(answer) > 512:
                        answer = self._truncated(answer)
                    self._udp.sendto(answer, peer)
            if self._tcp in ready:
                conn, _ = self._tcp.accept()
                with conn:
                    conn.settimeout(1)
                    length = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))[0]
                    answer = self._answer(conn.recv(length, socket.MSG_WAITALL), "tcp")
                    if answer is not None:
                        conn.sendall(struct.pack("!H", len(answer)) + answer)

    @staticmethod
    def _truncated(answer: bytes) -> bytes:
        """Header and question only, with TC set and no records, as servers do."""
        query_id, flags, qdcount, _, _, _ = struct.unpack_from("!HHHHHH", answer)
        end = answer.index(b"\0", 12) + 5
        return struct.pack("!HHHHHH", query_id, flags | 0x0200, qdcount, 0, 0, 0) + answer[12:end]

    def _answer(self, query: bytes, transport: str) -> bytes | None:
        query_id = int.from_bytes(query[:2], "big")
        labels, offset = [], 12
        while query[offset]:
            labels.append(query[offset + 1 : offset + 1 + query[offset]].decode().lower())
            offset += 1 + query[offset]
        name = ".".join(labels)
        qtype = struct.unpack_from("!H", query, offset + 1)[0]
        self.queries.append((transport, name, qtype))
        if self.mode == "timeout" or qtype in self.silent_types:
            return None
        if self.mode == "servfail":
            return reply(query_id, name, qtype, [], rcode=2)
        answers, owner = [], name
        while True:
            records = self.records.get(owner)
            if records is None:
                return reply(query_id, name, qtype, answers, rcode=NXDOMAIN)
            owner_wire = b"\xc0\x0c" if owner == name else wire(owner)  # compress like real servers
            alias = next((r for r in records if r[0] == "CNAME"), None)
            if alias is not None:
                answers.append(rr(owner_wire, 5, alias[2], wire(alias[1])))
                owner = alias[1]
                continue
            for rtype, value, ttl in records:
                if self.TYPES[rtype] == qtype:
                    answers.append(rr(owner_wire, qtype, ttl, ip(value).packed))
            return reply(query_id, name, qtype, answers)


@pytest.fixture
def dns() -> Iterator[FakeDNS]:
    server = FakeDNS()
    yield server
    server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n")
    return path


@pytest.fixture
def make_resolver(
    dns: FakeDNS, clock: FakeClock, hosts_file: Path, tmp_path: Path
) -> Callable[..., Resolver]:
    def make(**options: object) -> Resolver:
        settings: dict = dict(
            hosts_file=str(hosts_file),
            resolv_conf=str(tmp_path / "no-resolv.conf"),
            nameservers=[dns.address],
            timeout=0.1,
            attempts=1,
            clock=clock,
        )
        settings.update(options)
        return Resolver(**settings)

    return make


@pytest.fixture
def resolver(make_resolver: Callable[..., Resolver]) -> Resolver:
    return make_resolver()


class Recorder:
    """Collects on_change and on_error calls."""

    def __init__(self) -> None:
        self.changes: list[dict] = []
        self.errors: list[tuple[str, str]] = []
        self.changed = threading.Event()

    def on_change(self, mapping: dict) -> None:
        self.changes.append(mapping)
        self.changed.set()

    def on_error(self, host: str, why: str) -> None:
        self.errors.append((host, why))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def watcher(resolver: Resolver, recorder: Recorder) -> Iterator[HostWatcher]:
    w = HostWatcher(resolver, recorder.on_change, recorder.on_error)
    yield w
    w.stop()


# --- tests ---------------------------------------------------------------------------


class TestBuildQuery:
    def test_known_name(self) -> None:
        """A query is a 12-byte header with RD and one question: the name, the type, class IN."""
        expected = bytes.fromhex(
            "1234 0100 0001 0000 0000 0000"
            "03 617069 06 737472697065 03 636f6d 00"
            "0001 0001"
        )
        assert expected == build_query("api.stripe.com", A, 0x1234)

    def test_case_and_trailing_dot_do_not_matter(self) -> None:
        """A fully qualified, upper-case spelling produces the same query."""
        assert build_query("api.stripe.com", AAAA, 7) == build_query("API.Stripe.com.", AAAA, 7)

    @pytest.mark.parametrize(
        "host", ["", "a..b", "x" * 64 + ".com", "bücher.de", ("a" * 60 + ".") * 5]
    )
    def test_rejects_names_that_cannot_be_encoded(self, host: str) -> None:
        """Empty labels, long labels, long names and non-ASCII names are refused."""
        with pytest.raises(ValueError):
            build_query(host, A, 1)


class TestParseResponse:
    def test_compressed_owner_and_ttl_minimum(self) -> None:
        """Owners given as pointers to the question are read; the TTL is the answers' least."""
        data = reply(9, "api.example.com", A, [
            rr(b"\xc0\x0c", A, 300, bytes([192, 0, 2, 7])),
            rr(b"\xc0\x0c", A, 60, bytes([192, 0, 2, 1])),
            rr(b"\xc0\x0c", A, 300, bytes([192, 0, 2, 7])),
        ])
        expected = ((ip("192.0.2.1"), ip("192.0.2.7")), 60, NOERROR)
        assert expected == parse_response(data, 9, "api.example.com", A)

    def test_cname_chain_with_nested_pointers(self) -> None:
        """A CNAME chain is followed, through pointers to pointers; its TTL is the chain's least."""
        # Offsets: question name at 12 ("www" 12, "example" 16), answers start at 33;
        # the first CNAME's rdata starts at 33 + 2 + 10 = 45 and is "cdn" + pointer to 16.
        data = reply(1, "www.example.com", A, [
            rr(b"\xc0\x0c", 5, 120, b"\x03cdn\xc0\x10"),  # www.example.com -> cdn.example.com
            rr(b"\xc0\x2d", 5, 30, wire("edge.example.net")),  # cdn.example.com -> edge.example.net
            rr(wire("edge.example.net"), A, 600, bytes([198, 51, 100, 9])),
            rr(wire("other.example.org"), A, 1, bytes([203, 0, 113, 1])),  # unrelated: ignored
        ])
        assert ((ip("198.51.100.9"),), 30, NOERROR) == parse_response(data, 1, "www.example.com", A)

    def test_ipv6_records(self) -> None:
        """AAAA answers become IPv6 addresses."""
        data = reply(
            2, "v6.example.com", AAAA, [rr(b"\xc0\x0c", AAAA, 90, ip("2001:db8::1").packed)]
        )
        expected = ((ip("2001:db8::1"),), 90, NOERROR)
        assert expected == parse_response(data, 2, "v6.example.com", AAAA)

    def test_owner_names_compare_case_insensitively(self) -> None:
        """A server may echo the name in another case (0x20 randomization): still our answer."""
        answer = rr(wire("api.EXAMPLE.com"), A, 10, bytes([192, 0, 2, 3]))
        data = reply(3, "API.Example.COM", A, [answer])
        assert ((ip("192.0.2.3"),), 10, NOERROR) == parse_response(data, 3, "api.example.com", A)

    def test_nxdomain(self) -> None:
        """NXDOMAIN gives no addresses and no TTL."""
        data = reply(4, "gone.example.com", A, [], rcode=NXDOMAIN)
        assert ((), None, NXDOMAIN) == parse_response(data, 4, "gone.example.com", A)

    def test_nodata(self) -> None:
        """A CNAME chain that ends without records of the asked type is NODATA: no addresses."""
        alias = rr(b"\xc0\x0c", 5, 60, wire("v4only.example.com"))
        data = reply(5, "www.example.com", AAAA, [alias])
        assert ((), None, NOERROR) == parse_response(data, 5, "www.example.com", AAAA)

    def test_other_id_is_not_our_reply(self) -> None:
        """A packet with another id is rejected as mismatched."""
        data = reply(6, "api.example.com", A, [rr(b"\xc0\x0c", A, 60, bytes(4))])
        with pytest.raises(MismatchedResponse):
            parse_response(data, 7, "api.example.com", A)

    def test_other_question_is_not_our_reply(self) -> None:
        """A packet with our id but another name or type is rejected as mismatched."""
        data = reply(6, "evil.example.com", A, [rr(b"\xc0\x0c", A, 60, bytes(4))])
        with pytest.raises(MismatchedResponse):
            parse_response(data, 6, "api.example.com", A)
        with pytest.raises(MismatchedResponse):
            parse_response(data, 6, "evil.example.com", AAAA)

    def test_truncated(self) -> None:
        """TC set on our reply asks for a TCP retry."""
        data = reply(8, "big.example.com", A, [], flags=0x8380)
        with pytest.raises(TruncatedResponse):
            parse_response(data, 8, "big.example.com", A)

    def test_compression_pointer_loop(self) -> None:
        """An owner pointer that points at itself is malformed, not an endless loop."""
        data = reply(10, "a.example", A, [])
        data = data[:7] + b"\x01" + data[8:] + rr(b"\xc0" + bytes([len(data)]), A, 5, bytes(4))
        with pytest.raises(MalformedResponse):
            parse_response(data, 10, "a.example", A)

    def test_cname_loop(self) -> None:
        """CNAMEs that lead back to themselves are malformed."""
        data = reply(11, "a.example", A, [
            rr(wire("a.example"), 5, 5, wire("b.example")),
            rr(wire("b.example"), 5, 5, wire("a.example")),
        ])
        with pytest.raises(MalformedResponse):
            parse_response(data, 11, "a.example", A)

    def test_record_running_past_the_end(self) -> None:
        """A record whose length exceeds the message is malformed."""
        data = reply(12, "a.example", A, [rr(b"\xc0\x0c", A, 5, bytes(4))])[:-2]
        with pytest.raises(MalformedResponse):
            parse_response(data, 12, "a.example", A)


class TestResolver:
    def test_a_and_aaaa(self, dns: FakeDNS, resolver: Resolver) -> None:
        """Both families are asked; addresses are sorted IPv4 first and expire at the least TTL."""
        dns.records["api.example.com"] = [
            ("AAAA", "2001:db8::5", 50), ("A", "192.0.2.9", 300), ("A", "192.0.2.1", 300),
        ]
        addresses = (ip("192.0.2.1"), ip("192.0.2.9"), ip("2001:db8::5"))
        expected = Resolution("api.example.com", addresses, T0 + 50, "dns")
        assert expected == resolver.resolve("API.example.com.")

    def test_ipv6_only(self, dns: FakeDNS, resolver: Resolver) -> None:
        """A name with only AAAA records resolves to its IPv6 addresses."""
        dns.records["v6.example.com"] = [("AAAA", "2001:db8::2", 100), ("AAAA", "2001:db8::1", 100)]
        expected = (ip("2001:db8::1"), ip("2001:db8::2"))
        assert expected == resolver.resolve("v6.example.com").addresses

    def test_cname_chain(self, dns: FakeDNS, resolver: Resolver) -> None:
        """A CNAME chain gives its final name's addresses, expiring with its shortest link."""
        dns.records["www.example.com"] = [("CNAME", "lb.example.net", 40)]
        dns.records["lb.example.net"] = [("A", "198.51.100.4", 900)]
        expected = Resolution("www.example.com", (ip("198.51.100.4"),), T0 + 40, "dns")
        assert expected == resolver.resolve("www.example.com")

    @pytest.mark.parametrize(("ttl", "lifetime"), [(0, 5.0), (1, 5.0), (100_000, 3600.0)])
    def test_ttl_is_clamped(
        self, dns: FakeDNS, resolver: Resolver, ttl: int, lifetime: float
    ) -> None:
        """TTLs below min_ttl or above max_ttl are clamped."""
        dns.records["t.example.com"] = [("A", "192.0.2.1", ttl)]
        assert T0 + lifetime == resolver.resolve("t.example.com").expires_at

    def test_hosts_file_wins(self, dns: FakeDNS, resolver: Resolver, hosts_file: Path) -> None:
        """A name in the hosts file is answered from it alone, without asking DNS."""
        hosts_file.write_text("10.9.8.7  api.example.com\n")
        dns.records["api.example.com"] = [("A", "192.0.2.1", 300)]
        expected = Resolution("api.example.com", (ip("10.9.8.7"),), T0 + 60, "hosts")
        assert expected == resolver.resolve("api.example.com")
        assert [] == dns.queries

    def test_hosts_file_syntax(self, resolver: Resolver, hosts_file: Path) -> None:
        """Comments, aliases, IPv6, repeated names and case are handled; bad lines are skipped."""
        hosts_file.write_text(
            "# a comment line\n"
            "10.0.0.1\tDB.internal db  # trailing comment\n"
            "fd00::1 db.internal\n"
            "10.0.0.2 db.internal\n"
            "not-an-address other.internal\n"
            "10.0.0.3\n"
            "#10.0.0.4 other.internal\n"
        )
        expected = (ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1"))
        assert expected == resolver.resolve("db.Internal").addresses
        assert (ip("10.0.0.1"),) == resolver.resolve("DB").addresses
        assert "hosts" != resolver.resolve("other.internal").source

    def test_hosts_file_edits_are_seen(self, resolver: Resolver, hosts_file: Path) -> None:
        """Editing the hosts file takes effect on the next lookup."""
        hosts_file.write_text("10.0.0.1 svc.internal\n")
        assert (ip("10.0.0.1"),) == resolver.resolve("svc.internal").addresses
        hosts_file.write_text("10.0.0.22 svc.internal\n")
        assert (ip("10.0.0.22"),) == resolver.resolve("svc.internal").addresses

    def test_nxdomain(self, dns: FakeDNS, resolver: Resolver) -> None:
        """An unknown name resolves to nothing, from DNS, for negative_ttl."""
        expected = Resolution("nope.example.com", (), T0 + 30, "dns")
        assert expected == resolver.resolve("nope.example.com")

    def test_servfail(self, dns: FakeDNS, resolver: Resolver) -> None:
        """SERVFAIL is an error, retried after negative_ttl."""
        dns.records["api.example.com"] = [("A", "192.0.2.1", 300)]
        dns.mode = "servfail"
        result = resolver.resolve("api.example.com")
        assert ((), T0 + 30) == (result.addresses, result.expires_at)
        assert f"error: SERVFAIL from 127.0.0.1:{dns.address[1]}" == result.source

    def test_timeout(self, dns: FakeDNS, resolver: Resolver) -> None:
        """A silent server is an error after one timeout (A and AAAA are asked in parallel)."""
        dns.mode = "timeout"
        started = time.monotonic()
        result = resolver.resolve("api.example.com")
        assert 0.3 > time.monotonic() - started
        assert f"error: timeout after 0.1s from 127.0.0.1:{dns.address[1]}" == result.source
        assert ((), T0 + 30) == (result.addresses, result.expires_at)

    def test_next_server_after_failure(
        self, dns: FakeDNS, make_resolver: Callable[..., Resolver]
    ) -> None:
        """When the first nameserver fails, the next one is asked."""
        broken = FakeDNS()
        broken.mode = "servfail"
        try:
            dns.records["api.example.com"] = [("A", "192.0.2.1", 300)]
            resolver = make_resolver(nameservers=[broken.address, dns.address])
            result = resolver.resolve("api.example.com")
        finally:
            broken.close()
        assert Resolution("api.example.com", (ip("192.0.2.1"),), T0 + 300, "dns") == result

    def test_truncated_udp_falls_back_to_tcp(self, dns: FakeDNS, resolver: Resolver) -> None:
        """An answer too big for UDP comes back truncated and is fetched again over TCP."""
        many = [f"192.0.2.{i}" for i in range(1, 41)]
        dns.records["big.example.com"] = [("A", address, 300) for address in many]
        assert tuple(ip(a) for a in many) == resolver.resolve("big.example.com").addresses
        asked = [query for query in dns.queries if query[2] == A]
        assert [("udp", "big.example.com", A), ("tcp", "big.example.com", A)] == asked

    def test_ignores_packets_that_are_not_the_reply(self, dns: FakeDNS, resolver: Resolver) -> None:
        """Packets with another id or another question are skipped and the real reply is used."""
        dns.records["api.example.com"] = [("A", "192.0.2.1", 300)]
        dns.spoof = True
        expected = Resolution("api.example.com", (ip("192.0.2.1"),), T0 + 300, "dns")
        assert expected == resolver.resolve("api.example.com")

    def test_invalid_name(self, resolver: Resolver) -> None:
        """A name that cannot be put on the wire is an error result, not an exception."""
        assert resolver.resolve("a..b").source.startswith("error: invalid host name")

    def test_resolv_conf_nameservers(self, tmp_path: Path) -> None:
        """nameserver lines (IPv4, IPv6) are used in order, port 53; comments, junk skipped."""
        conf = tmp_path / "resolv.conf"
        conf.write_text(
            "# nameserver 10.0.0.9\nsearch corp\nnameserver 10.0.0.1\n"
            "nameserver fd00::53\nnameserver bogus\n"
        )
        assert [("10.0.0.1", 53), ("fd00::53", 53)] == Resolver(resolv_conf=str(conf)).nameservers

    def test_resolv_conf_without_nameservers(self, tmp_path: Path) -> None:
        """Without nameserver lines (or without the file) the local 127.0.0.1:53 is asked."""
        assert [("127.0.0.1", 53)] == Resolver(resolv_conf=str(tmp_path / "missing")).nameservers


class TestHostWatcher:
    def test_first_resolution_is_announced_once(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder
    ) -> None:
        """set_hosts resolves synchronously and reports the whole mapping once."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 300)]
        dns.records["b.example.com"] = [("AAAA", "2001:db8::b", 300)]
        watcher.set_hosts(["a.example.com", "B.example.com"])
        expected = {"a.example.com": (ip("192.0.2.1"),), "b.example.com": (ip("2001:db8::b"),)}
        assert [expected] == recorder.changes
        assert expected == watcher.addresses

    def test_empty_set_is_announced(self, watcher: HostWatcher, recorder: Recorder) -> None:
        """Even an empty first set is reported, so the caller knows resolution is done."""
        watcher.set_hosts([])
        assert [{}] == recorder.changes
        assert None is watcher.next_deadline()

    def test_set_hosts_adds_and_removes(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder
    ) -> None:
        """New names are resolved, dropped ones leave, and an unchanged set reports nothing."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 300)]
        dns.records["b.example.com"] = [("A", "192.0.2.2", 300)]
        watcher.set_hosts(["a.example.com"])
        watcher.set_hosts(["b.example.com", "a.example.com"])
        asked = len(dns.queries)
        watcher.set_hosts(["b.example.com"])
        watcher.set_hosts(["b.example.com"])
        assert [
            {"a.example.com": (ip("192.0.2.1"),)},
            {"a.example.com": (ip("192.0.2.1"),), "b.example.com": (ip("192.0.2.2"),)},
            {"b.example.com": (ip("192.0.2.2"),)},
        ] == recorder.changes
        assert asked == len(dns.queries)

    def test_expiry_triggers_reresolution(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """Nothing is asked before the TTL runs out; after it, the new addresses are announced."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60)]
        watcher.set_hosts(["a.example.com"])
        dns.records["a.example.com"] = [("A", "192.0.2.99", 60)]
        clock.advance(59)
        watcher.refresh_due()
        assert 1 == len(recorder.changes)
        clock.advance(1)
        watcher.refresh_due()
        assert {"a.example.com": (ip("192.0.2.99"),)} == recorder.changes[-1]
        assert T0 + 120 == watcher.next_deadline()

    def test_no_announcement_when_addresses_are_unchanged(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """A refresh with the same addresses moves the deadline but calls nothing."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60), ("A", "192.0.2.2", 60)]
        watcher.set_hosts(["a.example.com"])
        dns.records["a.example.com"] = [("A", "192.0.2.2", 90), ("A", "192.0.2.1", 90)]
        clock.advance(60)
        watcher.refresh_due()
        assert (1, T0 + 150) == (len(recorder.changes), watcher.next_deadline())

    def test_failed_refresh_keeps_last_good(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """A DNS outage keeps the known addresses, reports the error, retries after negative_ttl."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60)]
        watcher.set_hosts(["a.example.com"])
        dns.mode = "timeout"
        clock.advance(60)
        watcher.refresh_due()
        assert {"a.example.com": (ip("192.0.2.1"),)} == watcher.addresses
        why = f"timeout after 0.1s from 127.0.0.1:{dns.address[1]}"
        assert [("a.example.com", why)] == recorder.errors
        assert (1, T0 + 90) == (len(recorder.changes), watcher.next_deadline())

    def test_failure_of_one_family_keeps_its_addresses(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """When only AAAA fails, fresh IPv4 addresses are used and the last IPv6 ones kept."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60), ("AAAA", "2001:db8::1", 60)]
        watcher.set_hosts(["a.example.com"])
        dns.records["a.example.com"] = [("A", "192.0.2.2", 60), ("AAAA", "2001:db8::2", 60)]
        dns.silent_types = {AAAA}
        clock.advance(60)
        watcher.refresh_due()
        assert {"a.example.com": (ip("192.0.2.2"), ip("2001:db8::1"))} == recorder.changes[-1]
        assert ["a.example.com"] == [host for host, _ in recorder.errors]

    def test_failure_on_first_resolution(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder
    ) -> None:
        """A name that cannot be resolved at load is in force with no addresses, and reported."""
        dns.mode = "servfail"
        watcher.set_hosts(["a.example.com"])
        assert [{"a.example.com": ()}] == recorder.changes
        assert ["a.example.com"] == [host for host, _ in recorder.errors]

    def test_nxdomain_on_refresh_empties(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """A name that stops existing is an answer, not an outage: its addresses go."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60)]
        watcher.set_hosts(["a.example.com"])
        del dns.records["a.example.com"]
        clock.advance(60)
        watcher.refresh_due()
        assert ({"a.example.com": ()}, []) == (recorder.changes[-1], recorder.errors)

    def test_next_deadline_is_the_earliest(self, dns: FakeDNS, watcher: HostWatcher) -> None:
        """The next deadline is the soonest expiry among the hosts."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 600)]
        dns.records["b.example.com"] = [("A", "192.0.2.2", 45)]
        watcher.set_hosts(["a.example.com", "b.example.com"])
        assert T0 + 45 == watcher.next_deadline()

    def test_rejects_a_single_string(self, watcher: HostWatcher) -> None:
        """A bare string is refused rather than watched letter by letter."""
        with pytest.raises(TypeError):
            watcher.set_hosts("a.example.com")

    def test_thread_refreshes_when_due_and_stops_promptly(
        self, dns: FakeDNS, watcher: HostWatcher, recorder: Recorder, clock: FakeClock
    ) -> None:
        """The thread notices an expiry within its bounded sleep, and stop() returns at once."""
        dns.records["a.example.com"] = [("A", "192.0.2.1", 60)]
        watcher.max_sleep = 0.02
        watcher.set_hosts(["a.example.com"])
        watcher.start()
        recorder.changed.clear()
        dns.records["a.example.com"] = [("A", "192.0.2.2", 60)]
        clock.advance(60)
        assert recorder.changed.wait(1)
        started = time.monotonic()
        watcher.stop()
        assert 0.2 > time.monotonic() - started
        assert {"a.example.com": (ip("192.0.2.2"),)} == recorder.changes[-1]
