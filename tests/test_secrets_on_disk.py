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
