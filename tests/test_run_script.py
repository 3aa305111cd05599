"""scripts/run.sh (the quick start) with its tools stubbed: `flask`, `gunicorn` and `pip` on the
.venv's PATH record their arguments; the script's own file handling is the real one (the whole
quick start, with the real tools, is scripts/check_quick_start.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB_FLASK = """#!/bin/sh
echo "flask $*" >> "$STUB_LOG"
case "$*" in
  *"jobs worker"* | *"dicom listen"*) exec sleep 30 ;;
esac
"""


def stub_checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run.sh", repo / "scripts" / "run.sh")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    for name, body in {
        "pip": "#!/bin/sh\nexit 0\n",
        "flask": STUB_FLASK,
        "gunicorn": 'echo "gunicorn" >> "$STUB_LOG"\n',
    }.items():
        (venv_bin / name).write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
        (venv_bin / name).chmod(0o755)
    return repo


def test_the_key_and_the_first_password_go_to_the_instance_dir_the_app_reads(tmp_path):
    # With INSTANCE_DIR set, run.sh wrote instance/secret_key in the checkout while the app read
    # INSTANCE_DIR, found no key there and, in the development profile run.sh uses, signed every
    # session with its public fallback key 'development-only-key' (a forged admin session was a cookie away).
    repo = stub_checkout(tmp_path)
    instance = tmp_path / "data" / "cxr"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "INSTANCE_DIR": str(instance),
        "STUB_LOG": str(tmp_path / "calls.log"),
    }
    done = subprocess.run(
        [str(repo / "scripts" / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    key = instance / "secret_key"
    assert len(key.read_text().strip()) == 64 and key.stat().st_mode & 0o777 == 0o600
    assert (instance / "initial_admin_password").is_file()
    assert f"also in {instance}/initial_admin_password" in done.stdout
    assert not (repo / "instance").exists()
    assert "flask --app wsgi db upgrade" in (tmp_path / "calls.log").read_text()


def test_a_relative_instance_dir_is_where_the_script_was_started(tmp_path):
    """Found following docs/deployment.md ("A relative INSTANCE_DIR is taken from the directory the
    process starts in"): run.sh moves to the checkout first, so `INSTANCE_DIR=site scripts/run.sh` started
    in /srv put the key, the first password and the database in the checkout's site/, not /srv/site."""
    repo = stub_checkout(tmp_path)
    started_in = tmp_path / "srv"
    started_in.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "INSTANCE_DIR": "site",
        "STUB_LOG": str(tmp_path / "calls.log"),
    }
    done = subprocess.run(
        [str(repo / "scripts" / "run.sh")], cwd=started_in, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (started_in / "site" / "secret_key").is_file() and (started_in / "site" / "initial_admin_password").is_file()
    assert not (repo / "site").exists()
