"""The JSON reports the training scripts leave behind: written one way, so that they diff cleanly."""

from __future__ import annotations

import json
import pathlib


def write_report(path: pathlib.Path, report: dict) -> None:
    """`report` as indented JSON with a final newline, creating the folder it goes in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
