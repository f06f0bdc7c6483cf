"""The benchmark's peers (bench/peers.py): each one either attaches and detaches cleanly, or says why not."""

from __future__ import annotations

import os
import time

import pytest

from bench import peers

pytestmark = pytest.mark.kernel

# Start-up (bcc compiles C at start, READY_TIMEOUT bounds it) plus stop and detach; tens of
# milliseconds to about a second on the development machine.
BOUND = peers.READY_TIMEOUT + peers.ATTACH_TIMEOUT + peers.STOP_TIMEOUT + peers.DETACH_TIMEOUT


def _alive(pid: int) -> bool:
    """True while pid is a process that has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class TestRunning:
    """running(peer) around a block, for every peer the benchmark knows."""

    @pytest.mark.parametrize("peer", peers.PEERS + peers.EXTRA_PEERS)
    def test_runs_and_stops_cleanly_or_says_why(self, root: None, tracefs: None, peer: str) -> None:
        """The peer attaches and leaves no process behind within the bound, or PeerUnavailable says why."""
        started = time.monotonic()
        run = None
        try:
            with peers.running(peer) as run:
                assert run.name == peer
                assert 0 < run.startup_s < time.monotonic() - started
                assert run.detail and run.pids
                assert all(_alive(pid) for pid in run.pids)
                os.close(os.open("/etc/hostname", os.O_RDONLY))  # an event for the open hooks
        except peers.PeerUnavailable as unavailable:
            assert run is None, "PeerUnavailable after the peer was reported ready"
            assert str(unavailable).strip()
        assert time.monotonic() - started < BOUND
        assert peers.leftover_processes() == []
        if run is not None:
            assert not any(_alive(pid) for pid in run.pids)

    def test_unknown_peer_is_refused(self) -> None:
        """A name that is no peer is a ValueError, not a peer that cannot run."""
        with pytest.raises(ValueError, match="unknown peer"), peers.running("dtrace"):
            pass

