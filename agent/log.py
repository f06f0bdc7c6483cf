"""structlog, configured once: one JSON object per line, to stdout and optionally a file.

The file is reopened on SIGHUP (logrotate's copy-less rotation, `tail -F`). Keys every line has:
timestamp (RFC 3339, UTC), level, event; they come first so the lines read well in a terminal.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

import structlog

__all__ = ["LogSink", "configure", "get_logger"]

_FIRST_KEYS = ("timestamp", "level", "event")


class LogSink:
    """Where rendered lines go: stdout and an optional append-only file that can be reopened."""

    __slots__ = ("_file", "_lock", "_path", "_stdout")

    def __init__(self, path: str | None, stdout: TextIO | None = None) -> None:
        self._path = path
        self._stdout = stdout or sys.stdout
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self.reopen()

    def reopen(self) -> None:
        """Open the log file again by name (after rotation); OSError leaves the old one in use."""
        if self._path is None:
            return
        new = open(self._path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - kept open
        try:
            os.chmod(self._path, 0o640)
        except OSError:
            new.close()
            raise
        with self._lock:
            old, self._file = self._file, new
        if old is not None:
            old.close()

    def write(self, line: str) -> None:
        with self._lock:
            self._stdout.write(line + "\n")
            self._stdout.flush()
            if self._file is not None:
                self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _SinkLogger:
    """The structlog logger: hands every rendered line to the sink, whatever the method."""

    __slots__ = ("_sink",)

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message)

    debug = info = warning = error = critical = exception = log = msg


def _order_keys(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def configure(sink: LogSink, debug: bool = False) -> None:
    """Set up structlog for the whole process: JSON lines into sink."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            _order_keys,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(10 if debug else 20),
        logger_factory=lambda *_: _SinkLogger(sink),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger()
