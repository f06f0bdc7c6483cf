"""Unit tests for agent.policy_dir: reloading a watched policy directory, keeping the last good version.

Every edit moves the file's modification time forward explicitly (os.utime), so change detection never
depends on the file system's timestamp granularity or on how fast the test runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import policy_dir
from agent.policy import Mode, Policy
from agent.policy_dir import PolicyDirectory, Reload


def policy_text(name: str, mode: str = "enforce") -> str:
    """A valid policy document."""
    return f"apiVersion: hostguard/v1\nkind: Policy\nname: {name}\nmode: {mode}\n"


BAD_TEXT = "apiVersion: hostguard/v1\nkind: Policy\nname: alpha\nmode: enforced\n"
"""Invalid on line 4, field mode."""


def write(path: Path, text: str) -> Path:
    """Write text to path and move its mtime a second past whatever it was."""
    previous = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text, encoding="utf-8")
    if previous is not None:
        os.utime(path, ns=(previous + 1_000_000_000, previous + 1_000_000_000))
    return path


def modes(reload: Reload) -> dict[str, Mode]:
    """Policy name -> mode of what is in force."""
    return {name: policy.mode for name, policy in reload.policies.items()}


def error_lines(reload: Reload) -> list[str]:
    return [str(error) for error in reload.errors]


class TestLoad:
    """PolicyDirectory.load on a directory."""

    def test_good_directory(self, tmp_path: Path) -> None:
        """Every policy file of a good directory is in force, with no errors and nothing kept."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        write(tmp_path / "beta.yml", policy_text("beta", "audit"))
        reload = PolicyDirectory(tmp_path).load()
        assert ({"alpha": Mode.ENFORCE, "beta": Mode.AUDIT}, [], []) == (modes(reload), reload.errors, reload.kept)

    def test_policies_are_parsed_policies(self, tmp_path: Path) -> None:
        """A loaded policy is the Policy parsed from its file, with the file as source."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        policy = PolicyDirectory(tmp_path).load().policies["alpha"]
        assert (Policy, str(path)) == (type(policy), policy.source)

    def test_other_files_are_ignored(self, tmp_path: Path) -> None:
        """Files that are not *.yaml or *.yml, and hidden ones, are not loaded."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        write(tmp_path / "README.md", "not a policy")
        write(tmp_path / ".beta.yaml", policy_text("beta"))
        reload = PolicyDirectory(tmp_path).load()
        assert ({"alpha": Mode.ENFORCE}, []) == (modes(reload), reload.errors)

    def test_empty_directory(self, tmp_path: Path) -> None:
        """An empty directory puts nothing in force and reports nothing."""
        assert Reload({}, [], []) == PolicyDirectory(tmp_path).load()

    def test_invalid_from_first_load_is_not_in_force(self, tmp_path: Path) -> None:
        """A file invalid at the first load defines nothing, is reported, and nothing is kept."""
        write(tmp_path / "alpha.yaml", BAD_TEXT)
        write(tmp_path / "beta.yaml", policy_text("beta"))
        reload = PolicyDirectory(tmp_path).load()
        assert (
            {"beta": Mode.ENFORCE},
            [f"{tmp_path / 'alpha.yaml'}:4: mode: must be 'enforce' or 'audit', got 'enforced'"],
            [],
        ) == (modes(reload), error_lines(reload), reload.kept)


class TestChanged:
    """PolicyDirectory.changed: cheap change detection between loads."""

    def test_changed_before_the_first_load(self, tmp_path: Path) -> None:
        """A directory never loaded counts as changed."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        assert True is PolicyDirectory(tmp_path).changed()

    def test_unchanged_right_after_load(self, tmp_path: Path) -> None:
        """Right after a load nothing has changed."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        assert False is directory.changed()

    def test_changed_after_an_edit(self, tmp_path: Path) -> None:
        """Editing a file is a change."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, policy_text("alpha", "audit"))
        assert True is directory.changed()

    def test_changed_after_a_touch(self, tmp_path: Path) -> None:
        """A new modification time alone is a change."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        mtime = path.stat().st_mtime_ns + 1_000_000_000
        os.utime(path, ns=(mtime, mtime))
        assert True is directory.changed()

    def test_changed_after_adding_a_file(self, tmp_path: Path) -> None:
        """A new file is a change."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(tmp_path / "beta.yaml", policy_text("beta"))
        assert True is directory.changed()

    def test_changed_after_removing_a_file(self, tmp_path: Path) -> None:
        """A removed file is a change."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        path = write(tmp_path / "beta.yaml", policy_text("beta"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        path.unlink()
        assert True is directory.changed()

    def test_unchanged_after_reloading_the_change(self, tmp_path: Path) -> None:
        """Once the change is loaded, the directory is unchanged again."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, policy_text("alpha", "audit"))
        directory.load()
        assert False is directory.changed()

    def test_changed_when_the_directory_disappears(self, tmp_path: Path) -> None:
        """A directory that can no longer be read is a change."""
        policies = tmp_path / "policies"
        policies.mkdir()
        write(policies / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(policies)
        directory.load()
        (policies / "alpha.yaml").unlink()
        policies.rmdir()
        assert True is directory.changed()


class TestReload:
    """PolicyDirectory.load after changes: last good versions and independent files."""

    def test_edit_applies(self, tmp_path: Path) -> None:
        """A valid edit replaces the policy in force."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, policy_text("alpha", "audit"))
        reload = directory.load()
        assert ({"alpha": Mode.AUDIT}, [], []) == (modes(reload), reload.errors, reload.kept)

    def test_new_file_applies(self, tmp_path: Path) -> None:
        """A file added after the first load is in force after the next."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(tmp_path / "beta.yaml", policy_text("beta"))
        assert {"alpha": Mode.ENFORCE, "beta": Mode.ENFORCE} == modes(directory.load())

    def test_file_turned_invalid_keeps_last_good_policy(self, tmp_path: Path) -> None:
        """A file that stops validating keeps its last good policy in force, listed in kept, errors reported."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha", "audit"))
        directory = PolicyDirectory(tmp_path)
        good = directory.load().policies["alpha"]
        write(path, BAD_TEXT)
        reload = directory.load()
        assert (
            {"alpha": good},
            [f"{path}:4: mode: must be 'enforce' or 'audit', got 'enforced'"],
            ["alpha"],
        ) == (reload.policies, error_lines(reload), reload.kept)

    def test_still_invalid_keeps_it_again(self, tmp_path: Path) -> None:
        """While the file stays invalid, every load keeps the same last good policy."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha", "audit"))
        directory = PolicyDirectory(tmp_path)
        good = directory.load().policies["alpha"]
        write(path, BAD_TEXT)
        directory.load()
        write(path, BAD_TEXT + "# still bad\n")
        reload = directory.load()
        assert ({"alpha": good}, ["alpha"], 1) == (reload.policies, reload.kept, len(reload.errors))

    def test_fixed_file_replaces_the_kept_policy(self, tmp_path: Path) -> None:
        """Once the file is valid again, its new version is in force and nothing is kept."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha", "audit"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, BAD_TEXT)
        directory.load()
        write(path, policy_text("alpha", "enforce"))
        reload = directory.load()
        assert ({"alpha": Mode.ENFORCE}, [], []) == (modes(reload), reload.errors, reload.kept)

    def test_deleted_file_policy_disappears(self, tmp_path: Path) -> None:
        """Deleting a file takes its policy out of force, without errors."""
        write(tmp_path / "alpha.yaml", policy_text("alpha"))
        path = write(tmp_path / "beta.yaml", policy_text("beta"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        path.unlink()
        reload = directory.load()
        assert ({"alpha": Mode.ENFORCE}, [], []) == (modes(reload), reload.errors, reload.kept)

    def test_deleted_file_kept_before_disappears(self, tmp_path: Path) -> None:
        """A file deleted while invalid takes its kept policy with it."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, BAD_TEXT)
        directory.load()
        path.unlink()
        reload = directory.load()
        assert ({}, [], []) == (reload.policies, reload.errors, reload.kept)

    def test_one_bad_file_does_not_stop_the_others(self, tmp_path: Path) -> None:
        """Of two good files, one going bad keeps its old policy while the other's update applies."""
        alpha = write(tmp_path / "alpha.yaml", policy_text("alpha", "enforce"))
        beta = write(tmp_path / "beta.yaml", policy_text("beta", "enforce"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(alpha, BAD_TEXT)
        write(beta, policy_text("beta", "audit"))
        reload = directory.load()
        assert (
            {"alpha": Mode.ENFORCE, "beta": Mode.AUDIT},
            [str(alpha)],
            ["alpha"],
        ) == (modes(reload), [error.file for error in reload.errors], reload.kept)

    def test_renamed_policy_in_a_bad_file_is_kept_under_the_old_name(self, tmp_path: Path) -> None:
        """A file that turns invalid keeps the policy it defined, even if the bad text names another."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load()
        write(path, "apiVersion: hostguard/v1\nkind: Policy\nname: gamma\nmode: nope\n")
        reload = directory.load()
        assert ({"alpha": Mode.ENFORCE}, ["alpha"]) == (modes(reload), reload.kept)

    def test_reload_result_is_a_copy(self, tmp_path: Path) -> None:
        """Changing a returned mapping does not change what the directory has in force."""
        path = write(tmp_path / "alpha.yaml", policy_text("alpha"))
        directory = PolicyDirectory(tmp_path)
        directory.load().policies.clear()
        write(path, BAD_TEXT)
        assert ["alpha"] == directory.load().kept


class TestDirectoryTroubles:
    def test_file_removed_between_listing_and_stat_is_not_an_error(self, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A file that vanishes between readdir and stat (an editor's probe file) does not crash changed()."""
        (tmp_path / "alpha.yaml").write_text("x")
        directory = PolicyDirectory(tmp_path)
        directory.load()
        real_scandir = os.scandir

        def scandir_then_delete(path):  # noqa: ANN001, ANN202 - stands in for os.scandir
            (tmp_path / "4913").write_text("")
            entries = list(real_scandir(path))
            (tmp_path / "4913").unlink()
            return iter(entries)

        monkeypatch.setattr(policy_dir.os, "scandir", scandir_then_delete)
        assert False is directory.changed()

    def test_missing_directory_keeps_the_policies_in_force(self, tmp_path: Path) -> None:
        """A policy directory swapped out mid-deploy keeps every policy and reports why."""
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "a.yaml").write_text("apiVersion: hostguard/v1\nkind: Policy\nname: a\n")
        directory = PolicyDirectory(policies)
        assert ["a"] == sorted(directory.load().policies)
        policies.rename(tmp_path / "moved")
        reload = directory.load()
        assert (["a"], ["a"], 1) == (sorted(reload.policies), reload.kept, len(reload.errors))
