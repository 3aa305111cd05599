"""Where a run's uploaded archive waits for the worker: the instance folder, removed when the run ends.

Workers on other machines (REDIS_URL) must see the same instance folder (a shared volume).
"""

from __future__ import annotations

from pathlib import Path

from flask import current_app

from ..private_files import remove_untouched


def archive_folder() -> Path:
    return Path(current_app.config["INSTANCE_DIR"]) / "validation"


def archive_path(run_id: int) -> Path:
    return archive_folder() / f"run-{run_id}.zip"


# An upload still being saved is written to at least every few seconds; one untouched this long was
# cut short (its web worker killed) and will never become a run.
ORPHAN_SECONDS = 600


def remove_orphans(live_run_ids: set[int]) -> int:
    """Remove the archives no run will read, patients' films all: uploads cut short before their run
    was created, and a run's archive left after the run ended (its process died before removing it).
    Only files untouched for ORPHAN_SECONDS, so an upload being saved or just renamed to its run's
    name is never taken. Returns how many were removed."""
    folder = archive_folder()
    archives = [*folder.glob("upload-*.zip"), *folder.glob("run-*.zip")]
    return remove_untouched((path for path in archives if not _read_by_a_live_run(path, live_run_ids)), ORPHAN_SECONDS)


def _read_by_a_live_run(path: Path, live_run_ids: set[int]) -> bool:
    run_id = path.stem.removeprefix("run-")
    return run_id.isdigit() and int(run_id) in live_run_ids
