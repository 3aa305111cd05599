"""Where a run's uploaded archive waits for the worker: the instance folder, removed when the run ends.

Workers on other machines (REDIS_URL) must see the same instance folder (a shared volume).
"""

from __future__ import annotations

from pathlib import Path

from flask import current_app


def archive_folder() -> Path:
    return Path(current_app.config["INSTANCE_DIR"]) / "validation"


def archive_path(run_id: int) -> Path:
    return archive_folder() / f"run-{run_id}.zip"
