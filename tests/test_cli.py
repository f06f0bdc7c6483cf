"""Unit tests for agent.cli `validate`: exit codes and output for files, directories and the module entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

from .support import REPO

GOOD = "apiVersion: hostguard/v1\nkind: Policy\nname: {name}\nmode: {mode}\n"
BAD = (
    "apiVersion: hostguard/v1\n"
    "kind: Policy\n"
    "name: bad\n"
    "mode: enforced\n"           # line 4
    "exec:\n"
    "  alow: [/bin/sh]\n"        # line 6
)


def good(path: Path, name: str, mode: str = "enforce") -> Path:
    """Write a valid policy called name to path."""
    path.write_text(GOOD.format(name=name, mode=mode), encoding="utf-8")
    return path


def bad(path: Path) -> Path:
    """Write BAD (two errors, lines 4 and 6) to path."""
    path.write_text(BAD, encoding="utf-8")
    return path


def bad_lines(path: Path) -> list[str]:
    """The stderr lines validate prints for BAD at path."""
    return [
        f"{path}:4: mode: must be 'enforce' or 'audit', got 'enforced'",
        f"{path}:6: exec.alow: unknown field 'alow' (did you mean 'allow'?)",
    ]


class TestValidateFiles:
    """`hostguard validate FILE...`"""

    def test_good_file_exits_0_and_prints_ok(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid file returns 0 and prints "file: ok (name, mode)" to stdout, nothing to stderr."""
        path = good(tmp_path / "payments.yaml", "payments")
        code = main(["validate", str(path)])
        out, err = capsys.readouterr()
        assert (0, f"{path}: ok (payments, enforce)\n", "") == (code, out, err)

    def test_mode_is_printed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An audit policy is reported as audit."""
        path = good(tmp_path / "trial.yaml", "trial", "audit")
        main(["validate", str(path)])
        assert f"{path}: ok (trial, audit)\n" == capsys.readouterr().out

    def test_bad_file_exits_1_with_located_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid file returns 1 and prints every error as file:line: field: message to stderr."""
        path = bad(tmp_path / "bad.yaml")
        code = main(["validate", str(path)])
        out, err = capsys.readouterr()
        assert (1, "", bad_lines(path)) == (code, out, err.splitlines())

    def test_yaml_syntax_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A YAML syntax error returns 1 and names the file and line."""
        path = tmp_path / "broken.yaml"
        path.write_text("apiVersion: hostguard/v1\nkind: [Policy\n", encoding="utf-8")
        code = main(["validate", str(path)])
        err = capsys.readouterr().err
        assert (1, True) == (code, err.startswith(f"{path}:") and "YAML syntax error" in err)

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that does not exist returns 1 with "file: cannot read file: ..."."""
        path = tmp_path / "missing.yaml"
        code = main(["validate", str(path)])
        assert (1, f"{path}: cannot read file: No such file or directory\n") == (code, capsys.readouterr().err)

    def test_good_and_bad_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """One bad file among good ones returns 1 and prints only the errors."""
        first = good(tmp_path / "a.yaml", "a")
        broken = bad(tmp_path / "b.yaml")
        code = main(["validate", str(first), str(broken)])
        out, err = capsys.readouterr()
        assert (1, "", bad_lines(broken)) == (code, out, err.splitlines())

    def test_no_paths_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """validate without paths is an argparse usage error (exit 2)."""
        with pytest.raises(SystemExit) as info:
            main(["validate"])
        assert (2, True) == (info.value.code, "usage:" in capsys.readouterr().err)


class TestValidateDirectories:
    """`hostguard validate DIR...`, mixed with files."""

    def test_directory_of_good_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A directory validates every *.yaml/*.yml in sorted order, ignoring other files."""
        alpha = good(tmp_path / "alpha.yaml", "alpha")
        beta = good(tmp_path / "beta.yml", "beta", "audit")
        (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
        code = main(["validate", str(tmp_path)])
        assert (0, [f"{alpha}: ok (alpha, enforce)", f"{beta}: ok (beta, audit)"]) == (
            code, capsys.readouterr().out.splitlines())

    def test_directory_and_file_mix(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A directory and a file outside it are validated together."""
        policies = tmp_path / "policies"
        policies.mkdir()
        alpha = good(policies / "alpha.yaml", "alpha")
        extra = good(tmp_path / "extra.yaml", "extra")
        code = main(["validate", str(policies), str(extra)])
        assert (0, [f"{alpha}: ok (alpha, enforce)", f"{extra}: ok (extra, enforce)"]) == (
            code, capsys.readouterr().out.splitlines())

    def test_directory_with_a_bad_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad file inside a directory returns 1 and prints its errors."""
        good(tmp_path / "alpha.yaml", "alpha")
        broken = bad(tmp_path / "beta.yaml")
        code = main(["validate", str(tmp_path)])
        out, err = capsys.readouterr()
        assert (1, "", bad_lines(broken)) == (code, out, err.splitlines())

    def test_file_named_twice_is_validated_once(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file given directly and through its directory is one policy, not a duplicate."""
        alpha = good(tmp_path / "alpha.yaml", "alpha")
        code = main(["validate", str(tmp_path), str(alpha)])
        assert (0, [f"{alpha}: ok (alpha, enforce)"]) == (code, capsys.readouterr().out.splitlines())

    def test_duplicate_policy_name_across_files(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Two files defining one policy name return 1 with the second file's name line."""
        policies = tmp_path / "policies"
        policies.mkdir()
        first = good(policies / "a.yaml", "same")
        second = good(tmp_path / "b.yaml", "same")
        code = main(["validate", str(policies), str(second)])
        assert (1, [f"{second}:3: name: duplicate policy name 'same' (already defined in {first})"]) == (
            code, capsys.readouterr().err.splitlines())


class TestModuleEntryPoint:
    """`python -m agent` runs the same command line."""

    def test_validate_repository_policies(self) -> None:
        """`python -m agent validate policies/` exits 0 with one ok line per policy file."""
        result = subprocess.run([sys.executable, "-m", "agent", "validate", "policies/"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        files = sorted(path.name for path in (REPO / "policies").iterdir() if path.suffix in (".yaml", ".yml"))
        assert (0, "", files, True) == (
            result.returncode, result.stderr,
            [line.split(":")[0].removeprefix("policies/") for line in result.stdout.splitlines()],
            all(": ok (" in line for line in result.stdout.splitlines()),
        )

    def test_invalid_file_exits_1(self, tmp_path: Path) -> None:
        """`python -m agent validate BAD` exits 1 with the errors on stderr."""
        path = bad(tmp_path / "bad.yaml")
        result = subprocess.run([sys.executable, "-m", "agent", "validate", str(path)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert (1, "", bad_lines(path)) == (result.returncode, result.stdout, result.stderr.splitlines())


NO_LIBBPF = (
    "import ctypes, runpy\n"
    "real = ctypes.CDLL\n"
    "class CDLL(real):\n"
    "    def __init__(self, name, *a, **k):\n"
    "        if name and 'libbpf' in name: raise OSError('libbpf.so.1: cannot open shared object file')\n"
    "        super().__init__(name, *a, **k)\n"
    "ctypes.CDLL = CDLL\n"
    "runpy.run_module('agent', run_name='__main__', alter_sys=True)\n"
)


class TestValidateWithoutLibbpf:
    def test_validate_needs_no_libbpf(self) -> None:
        """`validate` (for CI and editors) works on a machine without libbpf.so.1."""
        result = subprocess.run([sys.executable, "-c", NO_LIBBPF, "validate", "policies/"], cwd=REPO,
                                capture_output=True, text=True)
        assert (0, "") == (result.returncode, result.stderr[-300:])
