"""The signing key is long enough, and the database and secret files are private (mode 0600)."""

import os
import stat

import pytest
from sqlalchemy import text

from webapp import create_app
from webapp.config import Config, TestingConfig
from webapp.extensions import db


@pytest.mark.parametrize("length", [16, 31])
def test_production_refuses_a_short_secret_key(tmp_path, length):
    with pytest.raises(RuntimeError, match="shorter than 32 characters"):
        create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": "k" * length})


def test_production_accepts_a_32_character_key(tmp_path):
    assert create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": "k" * 32}).config["SECRET_KEY"] == "k" * 32


def test_production_refuses_a_short_key_file(tmp_path):
    (tmp_path / "secret_key").write_text("short-key\n")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": None})


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_readable_by_others_is_made_private(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 48)
    key_file.chmod(0o644)
    create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": None})
    assert mode(key_file) == 0o600


def test_sqlite_database_is_created_private_whatever_the_umask(tmp_path):
    database = tmp_path / "cxr.sqlite"
    old = os.umask(0o022)
    try:
        app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}"})
        with app.app_context():
            with db.engine.begin() as conn:
                conn.execute(text("CREATE TABLE t (x INTEGER)"))
                conn.execute(text("INSERT INTO t VALUES (1)"))
            files = [database, *tmp_path.glob("cxr.sqlite-*")]
            assert {mode(f) for f in files} == {0o600}, {f.name: oct(mode(f)) for f in files}
            db.engine.dispose()
    finally:
        os.umask(old)


def test_films_from_the_pacs_archives_and_the_queue_are_private_whatever_the_umask(tmp_path):
    # The database was 0600, but a film spooled from the PACS, a result waiting in the outbox (both
    # DICOM with the patient's name, id and birth date), an uploaded validation archive and the
    # queue's jobs.sqlite were written with the umask's mode: 0644, readable by every local user.
    import io

    from werkzeug.datastructures import FileStorage

    from webapp.jobs.queue import jobs
    from webapp.pacs import spool
    from webapp.validation.runs import _save

    old = os.umask(0o022)
    try:
        app = create_app(TestingConfig, {"INSTANCE_DIR": tmp_path})
        with app.app_context():
            for kind in (spool.SPOOL, spool.OUTBOX):
                spool.write(kind, "film.dcm", b"DICM with a patient's name")
            archive = tmp_path / "run-1.zip"
            _save(FileStorage(io.BytesIO(b"PK archive of films")), archive, max_bytes=1000)
            jobs().pending()  # builds the SQLite queue
        written = [tmp_path / "dicom" / "spool" / "film.dcm", tmp_path / "dicom" / "outbox" / "film.dcm", archive]
        written += list(tmp_path.glob("jobs.sqlite*"))
        assert {str(f.relative_to(tmp_path)): oct(mode(f)) for f in written} == {
            str(f.relative_to(tmp_path)): "0o600" for f in written
        }
    finally:
        os.umask(old)


def test_a_key_file_on_a_read_only_mount_is_used_with_a_warning(tmp_path, monkeypatch, caplog):
    # A key mounted read-only (mode 0644) stopped the start: chmod's EROFS was not the PermissionError
    # make_private expected, and the app died with a traceback.
    import errno
    from pathlib import Path

    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 48)
    key_file.chmod(0o644)

    def read_only(self, mode):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "chmod", read_only)
    app = create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": None})
    assert app.config["SECRET_KEY"] == "k" * 48
    assert "readable by others and not ours to change" in caplog.text
