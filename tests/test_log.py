"""Unit tests for agent.log: JSON lines to stdout and a reopenable file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog

from agent import log
from agent.log import LogSink


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """configure() is process-wide: put structlog back as it was after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def stdout() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "hostguard.log"


@pytest.fixture
def sink(stdout: io.StringIO, log_file: Path) -> Iterator[LogSink]:
    """A sink writing to the StringIO stdout and to log_file, configured for info and above."""
    sink = LogSink(str(log_file), stdout=stdout)
    log.configure(sink)
    yield sink
    sink.close()


def lines(text: str) -> list[dict]:
    """Every line of text as its JSON object."""
    return [json.loads(line) for line in text.splitlines()]


def events(text: str) -> list[str]:
    return [entry["event"] for entry in lines(text)]


class TestLineFormat:
    """What one log line looks like."""

    def test_one_json_object_per_line(self, sink: LogSink, stdout: io.StringIO) -> None:
        """Each call writes exactly one line holding one JSON object."""
        log.get_logger().info("policy_loaded", name="payments", rules=3)
        log.get_logger().warning("policy_kept", name="build")
        assert [("policy_loaded", "payments", 3), ("policy_kept", "build", None)] == [
            (entry["event"], entry["name"], entry.get("rules")) for entry in lines(stdout.getvalue())]

    def test_first_keys_are_timestamp_level_event(self, sink: LogSink, stdout: io.StringIO) -> None:
        """timestamp, level and event come first in that order, the call's keys after them."""
        log.get_logger().info("violation", zeta=1, alpha=2)
        assert ["timestamp", "level", "event", "zeta", "alpha"] == list(lines(stdout.getvalue())[0])

    def test_first_keys_even_with_bound_context(self, sink: LogSink, stdout: io.StringIO) -> None:
        """Keys bound earlier do not push the three first keys back."""
        log.get_logger().bind(container="abc").error("violation", pid=1)
        assert ["timestamp", "level", "event"] == list(lines(stdout.getvalue())[0])[:3]

    def test_level_names(self, sink: LogSink, stdout: io.StringIO) -> None:
        """The level is the method's name."""
        logger = log.get_logger()
        logger.info("a")
        logger.warning("b")
        logger.error("c")
        assert ["info", "warning", "error"] == [entry["level"] for entry in lines(stdout.getvalue())]

    def test_timestamp_is_rfc3339_utc(self, sink: LogSink, stdout: io.StringIO) -> None:
        """The timestamp ends with "Z", parses as a UTC time and is the time of the call."""
        before = datetime.now(timezone.utc)
        log.get_logger().info("tick")
        after = datetime.now(timezone.utc)
        text = lines(stdout.getvalue())[0]["timestamp"]
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert (True, timedelta(0), True) == (text.endswith("Z"), stamp.utcoffset(), before <= stamp <= after)

    def test_exception_is_rendered_into_the_line(self, sink: LogSink, stdout: io.StringIO) -> None:
        """logger.exception puts the traceback into the same single line."""
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.get_logger().exception("handler_failed")
        entries = lines(stdout.getvalue())
        assert (1, "error", True) == (len(entries), entries[0]["level"],
                                      "RuntimeError: boom" in entries[0]["exception"])


class TestSink:
    """LogSink: stdout plus the log file."""

    def test_line_reaches_stdout_and_file(self, sink: LogSink, stdout: io.StringIO, log_file: Path) -> None:
        """The same line is written to stdout and appended to the file."""
        log.get_logger().info("started", version="0.1.0")
        assert (1, stdout.getvalue()) == (len(stdout.getvalue().splitlines()), log_file.read_text())

    def test_file_is_appended_to(self, stdout: io.StringIO, log_file: Path) -> None:
        """An existing log file keeps its lines; new ones follow."""
        log_file.write_text('{"event": "old"}\n')
        sink = LogSink(str(log_file), stdout=stdout)
        log.configure(sink)
        log.get_logger().info("new")
        sink.close()
        assert ["old", "new"] == events(log_file.read_text())

    def test_file_mode_is_0640(self, sink: LogSink, log_file: Path) -> None:
        """The log file is readable by its group, not by others."""
        assert 0o640 == stat.S_IMODE(log_file.stat().st_mode)

    def test_without_a_file_only_stdout(self, stdout: io.StringIO, tmp_path: Path) -> None:
        """A sink without a path writes to stdout and creates no file."""
        sink = LogSink(None, stdout=stdout)
        log.configure(sink)
        log.get_logger().info("only_stdout")
        sink.reopen()
        log.get_logger().info("still_stdout")
        sink.close()
        assert (["only_stdout", "still_stdout"], []) == (events(stdout.getvalue()), list(tmp_path.iterdir()))

    def test_lines_after_close_go_to_stdout_only(self, sink: LogSink, stdout: io.StringIO, log_file: Path) -> None:
        """After close() the file gets nothing more; stdout still does."""
        log.get_logger().info("before")
        sink.close()
        log.get_logger().info("after")
        assert (["before", "after"], ["before"]) == (events(stdout.getvalue()), events(log_file.read_text()))


class TestReopen:
    """LogSink.reopen after logrotate renamed the file."""

    def test_reopen_after_rename_writes_a_new_file(self, sink: LogSink, stdout: io.StringIO,
                                                    log_file: Path) -> None:
        """After a rename and reopen(), new lines go to a new file at the original path, old ones stay rotated."""
        rotated = log_file.with_name("hostguard.log.1")
        logger = log.get_logger()
        logger.info("before_rotation")
        os.rename(log_file, rotated)
        sink.reopen()
        logger.info("after_rotation")
        assert (["before_rotation"], ["after_rotation"], ["before_rotation", "after_rotation"]) == (
            events(rotated.read_text()), events(log_file.read_text()), events(stdout.getvalue()))

    def test_without_reopen_lines_follow_the_renamed_file(self, sink: LogSink, log_file: Path) -> None:
        """Until reopen(), the open file (now renamed) keeps receiving lines."""
        rotated = log_file.with_name("hostguard.log.1")
        os.rename(log_file, rotated)
        log.get_logger().info("late")
        assert (["late"], False) == (events(rotated.read_text()), log_file.exists())

    def test_reopened_file_mode_is_0640(self, sink: LogSink, log_file: Path) -> None:
        """The file created by reopen() gets mode 0640 too."""
        os.rename(log_file, log_file.with_name("hostguard.log.1"))
        sink.reopen()
        assert 0o640 == stat.S_IMODE(log_file.stat().st_mode)

    def test_failed_reopen_keeps_the_old_file(self, stdout: io.StringIO, tmp_path: Path) -> None:
        """When the path cannot be opened again, lines still reach the file that was open."""
        directory = tmp_path / "logs"
        directory.mkdir()
        path = directory / "hostguard.log"
        sink = LogSink(str(path), stdout=stdout)
        log.configure(sink)
        moved = tmp_path / "logs.old"
        os.rename(directory, moved)
        with contextlib.suppress(OSError):
            sink.reopen()
        log.get_logger().info("after_failed_reopen")
        sink.close()
        assert ["after_failed_reopen"] == events((moved / "hostguard.log").read_text())


class TestLevels:
    """Which levels are written."""

    def test_debug_filtered_by_default(self, sink: LogSink, stdout: io.StringIO, log_file: Path) -> None:
        """Without debug=True, debug lines are dropped and info lines kept."""
        logger = log.get_logger()
        logger.debug("noise")
        logger.info("signal")
        assert (["signal"], ["signal"]) == (events(stdout.getvalue()), events(log_file.read_text()))

    def test_debug_written_with_debug_true(self, stdout: io.StringIO, log_file: Path) -> None:
        """With debug=True, debug lines are written with level "debug"."""
        sink = LogSink(str(log_file), stdout=stdout)
        log.configure(sink, debug=True)
        log.get_logger().debug("noise")
        sink.close()
        assert [("noise", "debug")] == [(entry["event"], entry["level"]) for entry in lines(stdout.getvalue())]


class TestReopenFailure:
    def test_failed_reopen_raises_and_keeps_the_old_file(self, tmp_path: Path) -> None:
        """A reopen that cannot open the path raises OSError (the agent logs it) and lines keep reaching the old file."""
        directory = tmp_path / "logs"
        directory.mkdir()
        sink = LogSink(str(directory / "h.log"), stdout=io.StringIO())
        os.rename(directory, tmp_path / "logs.old")
        with pytest.raises(OSError):
            sink.reopen()
        sink.write("after")
        sink.close()
        assert "after\n" == (tmp_path / "logs.old" / "h.log").read_text()
