"""The seed scenario (examples/stripe-function) under the shipped `payments` policy.

A Node.js function creates a charge with the real stripe package against a local stand-in for the
payments API; a compromised dependency posts STRIPE_API_KEY to another address. Under hostguard the
charge succeeds, the exfiltration fails with EPERM, and the log names container, process and
destination. tests/test_images.py shows the same attack succeeding without hostguard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_process import AgentProcess, docker_run, unique_name
from .servers import FakeStripeAPI, Recorder
from .support import REPO

pytestmark = [pytest.mark.kernel, pytest.mark.docker]

PAYMENTS_API_PORT = 8080        # what policies/payments.yaml allows
API_KEY = "sk_test_hostguard_seed"


@pytest.fixture(scope="module")
def agent(root: None, object_dir: Path, tracefs: None, stripe_function_image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = AgentProcess(REPO / "policies", tmp_path_factory.mktemp("agent") / "agent.log")
    process.start()
    yield process
    assert 0 == process.stop()


def test_charge_succeeds_and_exfiltration_is_denied(agent: AgentProcess, stripe_function_image: str) -> None:
    """The payments API gets its charge, the attacker gets nothing, and the attempt is one logged violation."""
    with FakeStripeAPI(PAYMENTS_API_PORT) as api, Recorder() as attacker:
        attacker_port = attacker.port
        name = unique_name("payments")
        result = docker_run(stripe_function_image, policy="payments", name=name, network_host=True,
                            env={"STRIPE_API_KEY": API_KEY, "PAYMENTS_API_PORT": str(PAYMENTS_API_PORT),
                                 "EXFIL_PORT": str(attacker_port)})

        assert 0 == result.returncode, result.stderr
        assert '"status":"succeeded"' in result.stdout
        assert 1 == len(api.charges)
        assert f"Bearer {API_KEY}" == api.requests[0][2]["authorization"]
        assert [] == attacker.requests
        assert "pretty-currency: telemetry failed: EPERM" in result.stderr

    [violation] = agent.violations(name)
    assert {
        "event": "violation", "policy": "payments", "mode": "enforce", "action": "denied", "kind": "connect",
        "container_name": name, "comm": "node", "exe": "/usr/local/bin/node",
        "address": "127.0.0.1", "port": attacker_port, "protocol": "tcp",
    } == {key: violation[key] for key in ("event", "policy", "mode", "action", "kind", "container_name",
                                          "comm", "exe", "address", "port", "protocol")}
    assert 64 == len(violation["container_id"])
