"""The Enforcer against the real kernel maps of a loaded Sensor, and the kernel's tagging of new cgroups.

One Sensor serves the module; every test gets a fresh Enforcer, and afterwards its cgroups are removed
and every map the Enforcer writes is emptied, so each test starts from empty maps.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cgroups, compiler, loader
from agent.enforcement import Enforcer, Tagged
from agent.holds import HOLD
from agent.policy import Access, EgressRule, FileRule, Mode, NetAction, Policy, PortRange

from .support import loaded_sensor

pytestmark = pytest.mark.kernel

RULE_MAPS = ("exec_rules", "file_rules", "net4_rules", "net6_rules")
WRITTEN_MAPS = (*RULE_MAPS, "policies", "pending", "cgroups")
READ = compiler.RULE_VALUE.pack(Access.READ.value)
ALLOWED = compiler.RULE_VALUE.pack(1)


def _policy(name: str, exec_allow: tuple[str, ...] = ("/usr/bin/node",),
            file_allow: tuple[FileRule, ...] = (FileRule("/var/task/", Access.READ),),
            egress: tuple[EgressRule, ...] = (
                EgressRule(ipaddress.ip_network("10.0.0.0/8"), None, (PortRange(443, 443),)),),
            mode: Mode = Mode.ENFORCE, on_violation: NetAction = NetAction.DENY) -> Policy:
    """A small policy without the baseline, so that its map entries can be written out by hand."""
    return Policy(name=name, mode=mode, baseline=False, exec_allow=exec_allow, file_allow=file_allow,
                  on_violation=on_violation, egress=egress, source=f"<test {name}>")


def _ports(*ranges: tuple[int, int]) -> bytes:
    flat = [port for port_range in ranges for port in port_range]
    return compiler.PORTS.pack(len(ranges), 0, *flat, *[0] * (2 * (compiler.MAX_PORT_RANGES - len(ranges))))


def _contents(bpf_map: Any) -> dict[bytes, bytes]:
    """Every entry of a map, exactly as stored."""
    return {key: bpf_map.lookup(key) for key in list(bpf_map.keys())}


def _rules(sensor: loader.Sensor) -> dict[str, dict[bytes, bytes]]:
    return {name: _contents(sensor.maps[name]) for name in (*RULE_MAPS, "policies")}


def _compiled(*installed: tuple[Policy, int]) -> dict[str, dict[bytes, bytes]]:
    """What the rule maps and `policies` hold with exactly these (policy, id) pairs installed."""
    expected: dict[str, dict[bytes, bytes]] = {name: {} for name in (*RULE_MAPS, "policies")}
    for policy, policy_id in installed:
        rules = compiler.compile_policy(policy, policy_id)
        for name in RULE_MAPS:
            expected[name].update(getattr(rules, name))
        expected["policies"][compiler.RULE_VALUE.pack(policy_id)] = rules.policy
    return expected


def _policy_id(enforcer: Enforcer, name: str) -> int | None:
    return next((i for i in range(1, 256) if enforcer.policy_name(i) == name), None)


def _pending_key(leaf: str) -> bytes:
    return compiler.PENDING_KEY.pack(leaf.encode())


def _cgroup_key(directory: Path) -> bytes:
    return cgroups.cgroup_id(directory).to_bytes(8, "little")


def _tag(policy_id: int) -> bytes:
    return compiler.CGROUP.pack(policy_id, 0)


def _container_id() -> str:
    """A Docker-like 64-hex-digit id, unique to this test run."""
    return secrets.token_hex(32)


def _remove_cgroup_tree(directory: Path, keep_top: bool = False) -> None:
    """rmdir a cgroup directory and everything below it, deepest first."""
    if not directory.is_dir():
        return
    for current, _dirs, _files in os.walk(directory, topdown=False):
        if not (keep_top and Path(current) == directory):
            os.rmdir(current)


class Reports(list):
    """A report callback that records (event, keys)."""

    def __call__(self, event: str, **keys: Any) -> None:
        self.append((event, keys))


@pytest.fixture(scope="module")
def sensor(root: None, object_dir: Path) -> Iterator[loader.Sensor]:
    """hostguard's programs loaded and attached once for the module (tagging programs included)."""
    with loaded_sensor(object_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def runtime_parent(root: None) -> Iterator[tuple[Path, str]]:
    """(unified mount, "/hostguard-test-<random>"): a runtime parent cgroup of our own, removed at the end."""
    unified = cgroups.find_unified_mount()
    name = f"hostguard-test-{secrets.token_hex(6)}"
    (unified / name).mkdir()
    try:
        yield unified, f"/{name}"
    finally:
        _remove_cgroup_tree(unified / name)


@pytest.fixture
def parent_dir(runtime_parent: tuple[Path, str]) -> Path:
    unified, parent = runtime_parent
    return unified / parent.lstrip("/")


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def enforcer(sensor: loader.Sensor, runtime_parent: tuple[Path, str], parent_dir: Path,
             reports: Reports) -> Iterator[Enforcer]:
    """A fresh Enforcer on empty maps; afterwards its cgroups are removed and the maps emptied."""
    for name in WRITTEN_MAPS:
        assert {} == _contents(sensor.maps[name]), f"{name} not empty before the test"
    unified, parent = runtime_parent
    yield Enforcer(sensor.maps, unified, parent, reports)
    _remove_cgroup_tree(parent_dir, keep_top=True)
    for name in WRITTEN_MAPS:
        for key in list(sensor.maps[name].keys()):
            sensor.maps[name].delete(key)


class TestSetPolicies:
    def test_writes_policy_settings(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """`policies` maps the policy's id to its mode and network action."""
        enforcer.set_policies({"web": _policy("web", mode=Mode.AUDIT, on_violation=NetAction.KILL)})
        policy_id = _policy_id(enforcer, "web")
        assert {compiler.RULE_VALUE.pack(policy_id): compiler.POLICY.pack(1, 1)} == _contents(
            sensor.maps["policies"])

    def test_writes_exact_rule_keys(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """Exec, file, IPv4 and IPv6 rules are written under the policy id with the documented keys."""
        policy = _policy("web", egress=(
            EgressRule(ipaddress.ip_network("10.0.0.0/8"), None, (PortRange(443, 443),)),
            EgressRule(ipaddress.ip_network("fd00::/64"), None, ())))
        enforcer.set_policies({"web": policy})
        pid = _policy_id(enforcer, "web")
        expected = {
            "exec_rules": {compiler.path_key(pid, "/usr/bin/node"): ALLOWED},
            "file_rules": {compiler.path_key(pid, "/var/task/"): READ,
                           compiler.path_key(pid, "/usr/bin/node"): READ,      # exec implies read
                           compiler.path_key(pid, "/usr/bin/node/\0"): READ},  # the exact directory form
            "net4_rules": {compiler.NET4_KEY.pack(32 + 8, pid, bytes([10, 0, 0, 0])): _ports((443, 443))},
            "net6_rules": {compiler.NET6_KEY.pack(32 + 64, pid, ipaddress.ip_address("fd00::").packed):
                           _ports((1, 65535))},
            "policies": {compiler.RULE_VALUE.pack(pid): compiler.POLICY.pack(0, 0)},
        }
        assert expected == _rules(sensor)

    def test_each_policy_gets_its_own_id(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """Two policies are written under two distinct ids, each exactly as compiled."""
        web, api = _policy("web"), _policy("api", exec_allow=("/usr/bin/python3",))
        enforcer.set_policies({"web": web, "api": api})
        ids = (_policy_id(enforcer, "web"), _policy_id(enforcer, "api"))
        assert 2 == len(set(ids))
        assert _compiled((web, ids[0]), (api, ids[1])) == _rules(sensor)

    def test_changed_policy_is_updated_in_place(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """A reload keeps the id, deletes the rules that went away and writes the new ones."""
        enforcer.set_policies({"web": _policy("web")})
        policy_id = _policy_id(enforcer, "web")
        changed = _policy("web", exec_allow=("/usr/bin/python3",), mode=Mode.AUDIT,
                          egress=(EgressRule(ipaddress.ip_network("192.168.0.0/16"), None, ()),))
        enforcer.set_policies({"web": changed})
        rules = _rules(sensor)
        assert policy_id == _policy_id(enforcer, "web")
        assert (None, ALLOWED) == (rules["exec_rules"].get(compiler.path_key(policy_id, "/usr/bin/node")),
                                   rules["exec_rules"].get(compiler.path_key(policy_id, "/usr/bin/python3")))
        assert _compiled((changed, policy_id)) == rules

    def test_removed_unused_policy_disappears_from_every_map(self, sensor: loader.Sensor,
                                                             enforcer: Enforcer) -> None:
        """A policy no longer defined and used by no container leaves policies and every rule map."""
        web, api = _policy("web"), _policy("api", exec_allow=("/usr/bin/python3",))
        enforcer.set_policies({"web": web, "api": api})
        web_id, api_id = _policy_id(enforcer, "web"), _policy_id(enforcer, "api")
        enforcer.set_policies({"api": api})
        assert (None, ["api"]) == (enforcer.policy_name(web_id), enforcer.policy_names)
        assert _compiled((api, api_id)) == _rules(sensor)

    def test_removed_policy_in_use_fails_closed_under_its_id(self, sensor: loader.Sensor,
                                                             enforcer: Enforcer) -> None:
        """A policy removed while a container uses it becomes the fail-closed policy, same id."""
        enforcer.set_policies({"web": _policy("web")})
        policy_id = _policy_id(enforcer, "web")
        enforcer.container_added(_container_id(), "fn", "web")
        enforcer.set_policies({})
        assert policy_id == _policy_id(enforcer, "web")
        assert _compiled((compiler.fail_closed_policy("web"), policy_id)) == _rules(sensor)

    def test_compile_error_touches_no_map(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """A policy the maps cannot express raises CompileError and leaves the maps as they were."""
        enforcer.set_policies({"web": _policy("web")})
        before = _rules(sensor)
        too_many = tuple(PortRange(port, port) for port in range(1000, 1000 + 2 * 17, 2))
        bad = _policy("web", egress=(EgressRule(ipaddress.ip_network("10.0.0.0/8"), None, too_many),))
        with pytest.raises(compiler.CompileError):
            enforcer.set_policies({"web": bad, "api": _policy("api")})
        assert before == _rules(sensor)


class TestContainerAdded:
    def test_writes_pending_for_both_leaf_names(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """The container's cgroupfs and systemd leaf names are announced in `pending` with its policy id."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "web")
        tag = _tag(_policy_id(enforcer, "web"))
        assert {_pending_key(cid): tag, _pending_key(f"docker-{cid}.scope"): tag} == _contents(
            sensor.maps["pending"])
        assert {cid: Tagged(cid, "fn", "web")} == enforcer.containers

    def test_tags_an_existing_cgroup_and_its_children(self, sensor: loader.Sensor, enforcer: Enforcer,
                                                      parent_dir: Path) -> None:
        """A container whose cgroup already exists has that cgroup and every cgroup below it tagged."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        container_dir = parent_dir / cid
        child = container_dir / "child"
        child.mkdir(parents=True)
        assert {} == _contents(sensor.maps["cgroups"])   # nothing announced it: the kernel left it alone
        enforcer.container_added(cid, "fn", "web")
        tag = _tag(_policy_id(enforcer, "web"))
        assert {_cgroup_key(container_dir): tag, _cgroup_key(child): tag} == _contents(sensor.maps["cgroups"])

    def test_tags_an_existing_systemd_scope(self, sensor: loader.Sensor, enforcer: Enforcer,
                                            parent_dir: Path) -> None:
        """The systemd driver's leaf "docker-<id>.scope" is found and tagged as well."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        scope = parent_dir / f"docker-{cid}.scope"
        scope.mkdir()
        enforcer.container_added(cid, "fn", "web")
        assert {_cgroup_key(scope): _tag(_policy_id(enforcer, "web"))} == _contents(sensor.maps["cgroups"])

    def test_unknown_policy_is_reported(self, enforcer: Enforcer, reports: Reports) -> None:
        """A policy name no file defines is reported as unknown_policy with the container and the name."""
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        [(event, keys)] = reports
        assert ("unknown_policy", cid, "fn", "ghost") == (event, keys["container_id"], keys["container_name"],
                                                          keys["policy"])

    def test_unknown_policy_fails_closed_under_a_new_id(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """An unknown name gets a new id holding only the baseline, enforced, denying network."""
        web = _policy("web")
        enforcer.set_policies({"web": web})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        web_id, ghost_id = _policy_id(enforcer, "web"), _policy_id(enforcer, "ghost")
        rules = _rules(sensor)
        assert (True, None) == (ghost_id not in (None, web_id), enforcer.policy("ghost"))
        assert (compiler.POLICY.pack(0, 0), READ, {}) == (
            rules["policies"][compiler.RULE_VALUE.pack(ghost_id)],
            rules["file_rules"][compiler.path_key(ghost_id, "/lib/")],
            {key: value for key, value in rules["exec_rules"].items() if key[4:8] == ghost_id.to_bytes(4, "little")})
        assert _compiled((web, web_id), (compiler.fail_closed_policy("ghost"), ghost_id)) == rules
        assert _tag(ghost_id) == sensor.maps["pending"].lookup(_pending_key(cid))

    def test_defining_the_unknown_name_replaces_its_rules_in_place(self, sensor: loader.Sensor,
                                                                    enforcer: Enforcer) -> None:
        """A later policy file for the unknown name rewrites its rules under the same id; pending keeps it."""
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        ghost_id = _policy_id(enforcer, "ghost")
        ghost = _policy("ghost", exec_allow=("/usr/bin/python3",))
        enforcer.set_policies({"ghost": ghost})
        assert ghost_id == _policy_id(enforcer, "ghost")
        assert _compiled((ghost, ghost_id)) == _rules(sensor)
        assert _tag(ghost_id) == sensor.maps["pending"].lookup(_pending_key(cid))

    def test_second_container_of_unknown_name_shares_its_id(self, enforcer: Enforcer, sensor: loader.Sensor,
                                                            reports: Reports) -> None:
        """Two containers under the same unknown name share one fail-closed policy; each is reported."""
        first, second = _container_id(), _container_id()
        enforcer.container_added(first, "a", "ghost")
        enforcer.container_added(second, "b", "ghost")
        ghost_id = _policy_id(enforcer, "ghost")
        assert ([first, second], _tag(ghost_id), _tag(ghost_id)) == (
            [keys["container_id"] for _, keys in reports],
            sensor.maps["pending"].lookup(_pending_key(first)), sensor.maps["pending"].lookup(_pending_key(second)))

    def test_no_policy_writes_nothing(self, sensor: loader.Sensor, enforcer: Enforcer, reports: Reports,
                                      parent_dir: Path) -> None:
        """A container without a policy label (None) is left alone: no map entry, no report."""
        cid = _container_id()
        (parent_dir / cid).mkdir()
        enforcer.container_added(cid, "fn", None)
        assert ({name: {} for name in WRITTEN_MAPS}, {}, []) == (
            {name: _contents(sensor.maps[name]) for name in WRITTEN_MAPS}, enforcer.containers, list(reports))


class TestContainerRemoved:
    def test_deletes_pending_entries_and_keeps_a_defined_policy(self, sensor: loader.Sensor,
                                                                enforcer: Enforcer) -> None:
        """Removing a container deletes its pending names; a policy a file defines stays installed."""
        web = _policy("web")
        enforcer.set_policies({"web": web})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "web")
        enforcer.container_removed(cid)
        assert ({}, {}) == (_contents(sensor.maps["pending"]), enforcer.containers)
        assert _compiled((web, _policy_id(enforcer, "web"))) == _rules(sensor)

    def test_uninstalls_unknown_policy_when_its_last_container_goes(self, sensor: loader.Sensor,
                                                                    enforcer: Enforcer) -> None:
        """The fail-closed policy of an unknown name stays while a container uses it, and goes with the last."""
        first, second = _container_id(), _container_id()
        enforcer.container_added(first, "a", "ghost")
        enforcer.container_added(second, "b", "ghost")
        ghost_id = _policy_id(enforcer, "ghost")
        enforcer.container_removed(first)
        assert _compiled((compiler.fail_closed_policy("ghost"), ghost_id)) == _rules(sensor)
        enforcer.container_removed(second)
        assert ({name: {} for name in (*RULE_MAPS, "policies")}, {}, None) == (
            _rules(sensor), _contents(sensor.maps["pending"]), enforcer.policy_name(ghost_id))

    def test_retagged_container_releases_its_previous_unknown_policy(self, sensor: loader.Sensor,
                                                                    enforcer: Enforcer) -> None:
        """A container re-added under another name leaves no unused fail-closed policy behind."""
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        enforcer.container_added(cid, "fn", "other")
        enforcer.container_removed(cid)
        assert {name: {} for name in (*RULE_MAPS, "policies")} == _rules(sensor)

    def test_unknown_container_is_ignored(self, sensor: loader.Sensor, enforcer: Enforcer) -> None:
        """Removing a container the enforcer never tagged changes nothing."""
        enforcer.set_policies({"web": _policy("web")})
        before = _rules(sensor)
        enforcer.container_removed(_container_id())
        assert before == _rules(sensor)


class TestKernelTagging:
    def test_new_cgroup_with_pending_name_is_tagged(self, sensor: loader.Sensor, enforcer: Enforcer,
                                                    parent_dir: Path) -> None:
        """mkdir of a cgroup named like a pending container puts it in `cgroups` with that policy id."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "web")
        container_dir = parent_dir / cid
        container_dir.mkdir()
        assert {_cgroup_key(container_dir): _tag(_policy_id(enforcer, "web"))} == _contents(sensor.maps["cgroups"])

    def test_new_systemd_scope_with_pending_name_is_tagged(self, sensor: loader.Sensor, enforcer: Enforcer,
                                                           parent_dir: Path) -> None:
        """The systemd leaf name "docker-<id>.scope" is recognised by the kernel as well."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "web")
        scope = parent_dir / f"docker-{cid}.scope"
        scope.mkdir()
        assert {_cgroup_key(scope): _tag(_policy_id(enforcer, "web"))} == _contents(sensor.maps["cgroups"])

    def test_sub_cgroup_inherits_the_policy(self, sensor: loader.Sensor, enforcer: Enforcer,
                                            parent_dir: Path) -> None:
        """A cgroup created inside a tagged cgroup gets the same policy id, at any depth."""
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        container_dir = parent_dir / cid
        sub = container_dir / "sub"
        deeper = sub / "deeper"
        deeper.mkdir(parents=True)
        tag = _tag(_policy_id(enforcer, "ghost"))
        assert {_cgroup_key(container_dir): tag, _cgroup_key(sub): tag, _cgroup_key(deeper): tag} == _contents(
            sensor.maps["cgroups"])

    def test_rmdir_removes_the_entries(self, sensor: loader.Sensor, enforcer: Enforcer, parent_dir: Path) -> None:
        """Removing the cgroups (deepest first) drops their `cgroups` entries; pending stays until removal."""
        cid = _container_id()
        enforcer.container_added(cid, "fn", "ghost")
        container_dir = parent_dir / cid
        sub = container_dir / "sub"
        sub.mkdir(parents=True)
        assert 2 == len(_contents(sensor.maps["cgroups"]))
        sub.rmdir()
        assert [_cgroup_key(container_dir)] == list(_contents(sensor.maps["cgroups"]))
        container_dir.rmdir()
        assert ({}, 2) == (_contents(sensor.maps["cgroups"]), len(_contents(sensor.maps["pending"])))

    def test_unannounced_cgroup_is_left_alone(self, sensor: loader.Sensor, enforcer: Enforcer,
                                              parent_dir: Path) -> None:
        """A new cgroup whose name was not announced, under an untagged parent, gets no entry."""
        enforcer.set_policies({"web": _policy("web")})
        enforcer.container_added(_container_id(), "fn", "web")
        (parent_dir / _container_id() / "sub").mkdir(parents=True)
        assert {} == _contents(sensor.maps["cgroups"])

    def test_removed_container_is_no_longer_tagged_on_mkdir(self, sensor: loader.Sensor, enforcer: Enforcer,
                                                            parent_dir: Path) -> None:
        """After container_removed, a cgroup with its name is no longer tagged by the kernel."""
        enforcer.set_policies({"web": _policy("web")})
        cid = _container_id()
        enforcer.container_added(cid, "fn", "web")
        enforcer.container_removed(cid)
        (parent_dir / cid).mkdir()
        assert {} == _contents(sensor.maps["cgroups"])

    def test_container_for_cgroup_finds_a_kernel_tagged_sub_cgroup(self, enforcer: Enforcer,
                                                                   parent_dir: Path) -> None:
        """A cgroup id the kernel tagged by inheritance maps back to its container."""
        cid = _container_id()
        enforcer.set_policies({"web": _policy("web")})
        enforcer.container_added(cid, "fn", "web")
        sub = parent_dir / cid / "sub"
        sub.mkdir(parents=True)
        assert (Tagged(cid, "fn", "web"), None) == (enforcer.container_for_cgroup(cgroups.cgroup_id(sub)),
                                                     enforcer.container_for_cgroup(cgroups.cgroup_id(parent_dir)))


class TestKernelHold:
    @pytest.fixture
    def enforcer_watching(self, enforcer: Enforcer, sensor: loader.Sensor,
                          parent_dir: Path) -> Iterator[Enforcer]:
        yield enforcer
        sensor.maps["runtime_parents"].delete(_cgroup_key(parent_dir))

    def test_unannounced_child_of_an_owned_parent_is_held(self, enforcer_watching: Enforcer,
                                                          sensor: loader.Sensor, parent_dir: Path) -> None:
        """Under a runtime-owned parent (/docker) every new cgroup the agent did not announce is held."""
        enforcer_watching.watch_runtime_parent(parent_dir, shared=False)
        child = parent_dir / _container_id()
        child.mkdir()
        assert _tag(HOLD) == sensor.maps["cgroups"].lookup(_cgroup_key(child))

    def test_shared_parent_holds_only_docker_scopes(self, enforcer_watching: Enforcer,
                                                    sensor: loader.Sensor, parent_dir: Path) -> None:
        """Under a shared parent (system.slice) host services are never held, docker-*.scope cgroups are."""
        enforcer_watching.watch_runtime_parent(parent_dir, shared=True)
        service, scope = parent_dir / "cron.service", parent_dir / f"docker-{_container_id()}.scope"
        service.mkdir()
        scope.mkdir()
        assert (None, _tag(HOLD)) == (sensor.maps["cgroups"].lookup(_cgroup_key(service)),
                                      sensor.maps["cgroups"].lookup(_cgroup_key(scope)))

    def test_release_cgroup_untags_a_held_cgroup(self, enforcer_watching: Enforcer, sensor: loader.Sensor,
                                                 parent_dir: Path) -> None:
        """An untagged container caught by the hold is released from the map."""
        enforcer_watching.watch_runtime_parent(parent_dir, shared=False)
        child = parent_dir / _container_id()
        child.mkdir()
        enforcer_watching.release_cgroup(cgroups.cgroup_id(child))
        assert None is sensor.maps["cgroups"].lookup(_cgroup_key(child))


MOVE_IN_THEN_EXEC_MEMFD = """
import os, shutil, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:     # moved in without an exec, like runc init
    procs.write(str(os.getpid()))
fd = os.memfd_create("runc_cloned")                           # runc 1.1 re-executes itself from a copy
with open("/bin/true", "rb") as source:
    os.write(fd, source.read())
os.execv(f"/proc/self/fd/{fd}", ["runc", "init"])
"""


class TestRuntimeExemption:
    def test_runtime_reexec_from_outside_the_root_is_not_judged(self, enforcer: Enforcer, sensor: loader.Sensor,
                                                               parent_dir: Path) -> None:
        """A process moved into a held cgroup that re-executes itself from a memfd runs on, unstopped."""
        import subprocess
        import sys

        enforcer.watch_runtime_parent(parent_dir, shared=False)
        try:
            child = parent_dir / _container_id()
            child.mkdir()
            result = subprocess.run([sys.executable, "-c", MOVE_IN_THEN_EXEC_MEMFD, str(child)], timeout=10)
            assert 0 == result.returncode
        finally:
            sensor.maps["runtime_parents"].delete(_cgroup_key(parent_dir))
