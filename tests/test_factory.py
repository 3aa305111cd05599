import os
import subprocess
import sys
from pathlib import Path

import pytest

from webapp import create_app
from webapp.config import Config, DevelopmentConfig, TestingConfig


def test_testing_config(app):
    assert app.testing
    assert app.config["ENV_NAME"] == "testing"


@pytest.mark.parametrize("key", [None, "", "dev", "changeme"])
def test_production_refuses_missing_or_default_secret(tmp_path, key):
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": key})


def test_production_starts_with_a_real_secret(tmp_path):
    app = create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": "x" * 40})
    assert app.config["DEBUG"] is False
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_production_reads_secret_from_instance_folder(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 48 + "\n")
    app = create_app(Config, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": None})
    assert app.config["SECRET_KEY"] == "k" * 48


def test_development_runs_without_secret(tmp_path):
    app = create_app(DevelopmentConfig, {"INSTANCE_DIR": tmp_path, "SECRET_KEY": None})
    assert app.config["SECRET_KEY"]
    assert not app.config["SESSION_COOKIE_SECURE"]


def test_database_url_defaults_to_sqlite_in_instance():
    assert Config.SQLALCHEMY_DATABASE_URI.startswith("sqlite:///")
    assert (
        Config.SQLALCHEMY_DATABASE_URI.endswith("instance/cxr.sqlite") or "cxr.sqlite" in Config.SQLALCHEMY_DATABASE_URI
    )


def test_model_path_defaults_to_shipped_model():
    assert TestingConfig.MODEL_PATH.name == "cxr_pneumonia.keras"
    assert TestingConfig.MODEL_PATH.is_file()


def test_security_headers(client):
    response = client.get("/auth/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"]


def test_templates_have_no_inline_scripts_or_styles(app):
    for template in Path(app.root_path, "templates").rglob("*.html"):
        html = template.read_text()
        assert "<script>" not in html and " style=" not in html and "onclick" not in html, template


def test_app_import_does_not_load_tensorflow(tmp_path):
    # gunicorn's master imports the app before forking workers; TensorFlow must not be in it.
    code = (
        "import sys; from webapp import create_app; from webapp.config import TestingConfig; "
        "create_app(TestingConfig); print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(("value", "expected"), [(None, "True"), ("false", "False"), ("true", "True")])
def test_review_copy_in_background_comes_from_the_environment(value, expected):
    # A documented variable (docs/deployment.md); settings are read when the module is imported.
    env = {k: v for k, v in os.environ.items() if k != "REVIEW_COPY_IN_BACKGROUND"}
    if value is not None:
        env["REVIEW_COPY_IN_BACKGROUND"] = value
    code = "from webapp.config import Config; print(Config.REVIEW_COPY_IN_BACKGROUND)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == expected
