"""Loopback HTTP servers that tests run in-process, one thread each.

Containers under test run with ``--network host``, so a server bound to
127.0.0.1 here is reachable from inside them at the same address. Each server
records every request so a test can assert on what a (confined or unconfined)
workload actually managed to send.

    with FakeStripeAPI() as api, Recorder() as attacker:
        ...  # run the workload with PAYMENTS_API_PORT=api.port, EXFIL_PORT=attacker.port
        assert [] == attacker.requests
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit


class Request(NamedTuple):
    """One recorded request; unpacks as ``(method, path, headers, body)``.

    Header names are lower-cased (HTTP header names are case-insensitive, so
    tests look them up one way: ``headers["authorization"]``).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    """Reads and records every request, then lets the owning server answer it."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; every answer has Content-Length
    server: _Server

    def _handle(self) -> None:
        request = Request(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
        )
        self.server.owner._record(request)
        status, content_type, body, extra = self.server.owner._respond(request)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def __getattr__(self, name: str) -> Any:
        # do_GET, do_POST, do_FOO...: every method goes through _handle.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output should show assertions, not access logs."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive socket must not block shutdown

    def __init__(self, owner: LoopbackServer, port: int) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)


class LoopbackServer:
    """Base: a context manager serving on 127.0.0.1:``port`` (0 = pick a free port)."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._requests: list[Request] = []
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (known once the server is started)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._server.server_address[1]

    @property
    def requests(self) -> list[Request]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._changed:
            return list(self._requests)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests have arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    def start(self) -> Self:
        self._server = _Server(self, self._requested_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _respond(self, request: Request) -> tuple[int, str, bytes, dict[str, str]]:
        """Return (status, content type, body, extra headers) for ``request``."""
        raise NotImplementedError


class Recorder(LoopbackServer):
    """Accepts anything and answers 200 "ok": an attacker's collection server."""

    def _respond(self, request: Request) -> tuple[int, str, bytes, dict[str, str]]:
        return 200, "text/plain", b"ok", {}


class FakeStripeAPI(LoopbackServer):
    """Stand-in for the payments API: ``POST /v1/charges`` and nothing else.

    Answers with the shapes the real API uses, so the unmodified ``stripe`` SDK
    parses them: a charge object on success, ``{"error": {...}}`` otherwise.
    Created charges are kept in ``.charges`` for assertions.
    """

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._charges: list[dict[str, Any]] = []

    @property
    def charges(self) -> list[dict[str, Any]]:
        """A snapshot of the charge objects returned so far."""
        with self._changed:
            return list(self._charges)

    def _respond(self, request: Request) -> tuple[int, str, bytes, dict[str, str]]:
        path = urlsplit(request.path).path
        if (request.method, path) != ("POST", "/v1/charges"):
            return self._error(
                404,
                f"Unrecognized request URL ({request.method}: {path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return self._error(
                401,
                "You did not provide an API key. You need to provide your API key in "
                "the Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        for required in ("amount", "currency"):
            if required not in form:
                return self._error(400, f"Missing required param: {required}.", param=required,
                                   code="parameter_missing")
        if not form["amount"].isdigit():
            return self._error(400, "Invalid integer: " + form["amount"], param="amount",
                               code="parameter_invalid_integer")
        charge = self._charge(form, livemode=key.startswith("sk_live_"))
        with self._changed:
            self._charges.append(charge)
        return 200, "application/json", json.dumps(charge).encode(), self._request_id()

    @staticmethod
    def _charge(form: dict[str, str], livemode: bool) -> dict[str, Any]:
        """A charge object shaped like the API's, built from the form fields."""
        amount = int(form["amount"])
        metadata = {k[len("metadata["):-1]: v for k, v in form.items()
                    if k.startswith("metadata[") and k.endswith("]")}
        return {
            "id": "ch_test_" + secrets.token_hex(12),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "balance_transaction": "txn_test_" + secrets.token_hex(12),
            "captured": True,
            "created": int(time.time()),
            "currency": form["currency"].lower(),
            "customer": form.get("customer"),
            "description": form.get("description"),
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": livemode,
            "metadata": metadata,
            "outcome": {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            "paid": True,
            "payment_method": "card_test_" + secrets.token_hex(12),
            "receipt_email": form.get("receipt_email"),
            "refunded": False,
            "source": {"id": form.get("source"), "object": "card", "brand": "Visa", "last4": "4242"},
            "status": "succeeded",
        }

    @classmethod
    def _error(cls, status: int, message: str, **fields: str) -> tuple[int, str, bytes, dict[str, str]]:
        error = {"message": message, "type": "invalid_request_error", **fields}
        return status, "application/json", json.dumps({"error": error}).encode(), cls._request_id()

    @staticmethod
    def _request_id() -> dict[str, str]:
        return {"Request-Id": "req_" + secrets.token_hex(7)}
