"""Baseline without hostguard: the test images work and the seed attack succeeds unprotected.

The enforcement tests build on exactly these images and servers; if this file
fails, their failures mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.images import BUSYBOX_IMAGE, ensure_busybox_image
from tests.servers import FakeStripeAPI, Recorder

def docker_run(image: str, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a throwaway container on the host network (so it reaches our 127.0.0.1 servers)."""
    args = ["docker", "run", "--rm", "--network", "host"]
    for name, value in (env or {}).items():
        args += ["--env", f"{name}={value}"]
    return subprocess.run(args + [image, *command], capture_output=True, text=True, timeout=120)


@pytest.mark.docker
class TestBusyboxImage:
    def test_cat_prints_the_task_file(self, busybox_image: str) -> None:
        """cat, an applet symlink, prints /var/task/hello.txt."""
        result = docker_run(busybox_image, "cat", "/var/task/hello.txt")

        assert (0, "hello\n", "") == (result.returncode, result.stdout, result.stderr)

    def test_tag_is_the_published_name(self, busybox_image: str) -> None:
        """ensure_busybox_image returns BUSYBOX_IMAGE, the tag other tests use."""
        assert BUSYBOX_IMAGE == busybox_image

    def test_rebuild_is_skipped_when_content_is_unchanged(self, busybox_image: str) -> None:
        """A second ensure keeps the very same image id."""
        before = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", busybox_image],
                                capture_output=True, text=True, check=True).stdout

        ensure_busybox_image()

        after = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", busybox_image],
                               capture_output=True, text=True, check=True).stdout
        assert before == after


@pytest.mark.docker
class TestStripeFunctionImage:
    @pytest.fixture(scope="class")
    def unprotected_run(self, stripe_function_image: str):
        """One run of the function with the payments API and the attacker's server both up."""
        with FakeStripeAPI() as api, Recorder() as attacker:
            result = docker_run(stripe_function_image, env={
                "STRIPE_API_KEY": "sk_test_123",
                "PAYMENTS_API_PORT": str(api.port),
                "EXFIL_PORT": str(attacker.port),
            })
            yield result, api, attacker

    def test_function_exits_zero(self, unprotected_run) -> None:
        """The function finishes successfully."""
        result, _, _ = unprotected_run

        assert 0 == result.returncode, result.stderr

    def test_function_prints_the_charge_id(self, unprotected_run) -> None:
        """stdout is one JSON line with the id and status the API returned."""
        result, api, _ = unprotected_run

        assert [{"charge": api.charges[0]["id"], "status": "succeeded"}] == [
            json.loads(line) for line in result.stdout.splitlines()]

    def test_api_saw_the_charge_with_the_key(self, unprotected_run) -> None:
        """The payments API received one charge for $20.00, authenticated with the key."""
        _, api, _ = unprotected_run

        assert [("POST", "/v1/charges", "Bearer sk_test_123", {"amount": "2000", "currency": "usd"})] == [
            (method, path, headers.get("authorization"), _form_subset(body, "amount", "currency"))
            for method, path, headers, body in api.requests]

    def test_attacker_received_the_key(self, unprotected_run) -> None:
        """Unprotected, the malicious dependency delivers the key to the attacker's server."""
        _, _, attacker = unprotected_run

        assert [("POST", "/collect", {"key": "sk_test_123"})] == [
            (method, path, json.loads(body)) for method, path, _, body in attacker.requests]

    def test_dependency_formats_the_log_line(self, unprotected_run) -> None:
        """pretty-currency is really used (so it cannot just be dropped) and reports no failure."""
        result, _, _ = unprotected_run

        assert "charging $20.00\n" == result.stderr


class TestFakeStripeAPI:
    def test_charge_without_key_is_401(self) -> None:
        """A charge without Bearer auth gets 401 and a Stripe-shaped error."""
        with FakeStripeAPI() as api:
            status, body = _post(f"http://127.0.0.1:{api.port}/v1/charges", b"amount=1&currency=usd")

        assert (401, "invalid_request_error") == (status, body["error"]["type"])

    def test_unknown_path_is_404(self) -> None:
        """Anything but POST /v1/charges gets 404 and a Stripe-shaped error."""
        with FakeStripeAPI() as api:
            status, body = _post(f"http://127.0.0.1:{api.port}/v1/customers", b"", key="sk_test_1")

        assert (404, "invalid_request_error") == (status, body["error"]["type"])

    def test_charge_echoes_the_form(self) -> None:
        """A charge object is built from the form fields."""
        with FakeStripeAPI() as api:
            status, body = _post(f"http://127.0.0.1:{api.port}/v1/charges",
                                 b"amount=150&currency=EUR&description=x", key="sk_test_1")

        assert (200, "charge", 150, "eur", "x", "succeeded", True) == (
            status, body["object"], body["amount"], body["currency"], body["description"],
            body["status"], body["paid"])


class TestRecorder:
    def test_records_any_request(self) -> None:
        """Any method and path is answered 200 "ok" and recorded with its body."""
        with Recorder() as recorder:
            request = urllib.request.Request(f"http://127.0.0.1:{recorder.port}/x?y=1", data=b"payload",
                                             method="PUT")
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = (response.status, response.read())

        assert ((200, b"ok"), [("PUT", "/x?y=1", b"payload")]) == (
            answer, [(method, path, body) for method, path, _, body in recorder.requests])


def _form_subset(body: bytes, *names: str) -> dict[str, str]:
    fields = dict(urllib.parse.parse_qsl(body.decode()))
    return {name: fields.get(name) for name in names}


def _post(url: str, data: bytes, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
