"""A policy directory watched by a running agent: reload on change, keep the last good version.

A file that stops validating (a typo during an edit) is reported with file, line and field, and the
policy it last defined stays in force; other files reload normally. Change detection compares names,
sizes and modification times, which a poll once a second can afford and which needs no inotify.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .policy import Policy, PolicyError, scan_policy_dir

__all__ = ["PolicyDirectory", "Reload"]


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of one load: what is in force now, and what was wrong."""

    policies: dict[str, Policy]
    errors: list[PolicyError]
    kept: list[str]            # policy names kept from their last good version


@dataclass
class PolicyDirectory:
    path: Path
    _fingerprint: tuple | None = None
    _in_force: dict[str, Policy] = field(default_factory=dict)

    def changed(self) -> bool:
        """Whether the directory looks different from the last load."""
        return self._scan_fingerprint() != self._fingerprint

    def load(self) -> Reload:
        """Load the directory now; bad files keep the policy they defined last time it was good."""
        self._fingerprint = self._scan_fingerprint()
        if not os.path.isdir(self.path):
            # a directory swapped out mid-deploy must not take every policy down with it
            error = PolicyError(str(self.path), 0, "", "policy directory is missing or unreadable; "
                                "the policies in force stay")
            return Reload(dict(self._in_force), [error], sorted(self._in_force))
        good, errors = scan_policy_dir(self.path)
        bad_files = {error.file for error in errors}
        kept = []
        for name, previous in self._in_force.items():
            if name not in good and previous.source in bad_files:
                good[name] = previous
                kept.append(name)
        self._in_force = good
        return Reload(dict(good), errors, kept)

    def _scan_fingerprint(self) -> tuple:
        try:
            entries = sorted(os.scandir(self.path), key=lambda entry: entry.name)
        except OSError as error:
            return ("error", error.errno)
        fingerprint = []
        for entry in entries:
            try:
                if entry.is_file():
                    info = entry.stat()
                    fingerprint.append((entry.name, info.st_mtime_ns, info.st_size))
            except FileNotFoundError:
                continue                # an editor's probe or swap file, gone already
        return tuple(fingerprint)
