"""Application factory: create_app() binds config, extensions, blueprints and handlers."""

from __future__ import annotations

from flask import Flask

from .cli_group import migration_commands
from .config import INSECURE_SECRET_KEYS, MIN_SECRET_KEY_LENGTH, PROJECT_DIR, SECRET_KEY_FILE, Config, config_from_env
from .env import ConfigError
from .extensions import csrf, db, login_manager, migrate
from .inference.decide import threshold_text
from .params import BoundedIntConverter
from .private_files import make_private
from .responses import error_text, takes_error_focus


def create_app(config_class: type[Config] | None = None, overrides: dict | None = None) -> Flask:
    config_class = config_class or config_from_env()
    app = Flask(__name__, instance_path=str(config_class.INSTANCE_DIR))
    app.config.from_object(config_class)
    app.config.update(overrides or {})
    app.url_map.converters["int"] = BoundedIntConverter  # before any route is added
    load_secret_key(app)
    check_directory_settings(app)
    register_extensions(app)
    register_blueprints(app)
    app.add_template_global(takes_error_focus)
    app.add_template_global(error_text)
    app.add_template_filter(threshold_text, "threshold")
    register_local_time(app)
    register_errorhandlers(app)
    register_request_hooks(app)
    register_cli(app)
    return app


def load_secret_key(app: Flask) -> None:
    """Take SECRET_KEY from the environment, else from instance/secret_key; refuse weak keys."""
    key = app.config.get("SECRET_KEY")
    key_file = app.config["INSTANCE_DIR"] / SECRET_KEY_FILE
    if not key and key_file.is_file():
        make_private(key_file)
        key = key_file.read_text().strip()
    if app.config["ENV_NAME"] == "production" and (
        not key or key in INSECURE_SECRET_KEYS or len(key) < MIN_SECRET_KEY_LENGTH
    ):
        raise ConfigError(
            f"SECRET_KEY is missing, a well-known default or shorter than {MIN_SECRET_KEY_LENGTH} characters. "
            f"Set a long random SECRET_KEY environment variable (or write one to {key_file}) before starting "
            "in production, e.g. python -c 'import secrets; print(secrets.token_hex(32))'."
        )
    app.config["SECRET_KEY"] = key or "development-only-key"
    app.config["DEBUG"] = False if app.config["ENV_NAME"] == "production" else app.config.get("DEBUG", False)


def check_directory_settings(app: Flask) -> None:
    from .auth.directory import settings_problem

    problem = settings_problem(app.config)
    if problem:
        raise ConfigError(f"Directory sign-in is misconfigured: {problem} See docs/sign-in.md.")


def register_extensions(app: Flask) -> None:
    from . import models, ratelimits  # models registers the tables with SQLAlchemy
    from .jobs import queue

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_DIR / "migrations"))
    app.cli.add_command(migration_commands(app.cli.commands["db"]), "db")  # replaces Flask-Migrate's own
    csrf.init_app(app)
    login_manager.init_app(app)
    ratelimits.init_app(app)
    queue.init_app(app)

    from .auth import sessions

    @login_manager.user_loader
    def load_user(user_id: str):
        # Every request re-checks the session against its user: version, idle and absolute timeouts.
        user = db.session.get(models.User, int(user_id))
        return user if user is not None and sessions.still_valid(user) else None


def register_blueprints(app: Flask) -> None:
    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .api import register as register_api
    from .auth import bp as auth_bp
    from .health import bp as health_bp
    from .history import bp as history_bp
    from .pacs import bp as pacs_bp
    from .preferences import bp as preferences_bp
    from .screening import bp as screening_bp
    from .validation import bp as validation_bp

    for blueprint in (auth_bp, screening_bp, history_bp, pacs_bp, admin_bp, validation_bp, health_bp, preferences_bp):
        app.register_blueprint(blueprint)
    register_api(app)  # through flask-smorest, which builds the OpenAPI document from the routes
    csrf.exempt(api_bp)  # bearer tokens, no cookies: nothing for a forged request to ride on


def register_local_time(app: Flask) -> None:
    from . import local_time

    local_time.init_app(app)


def register_errorhandlers(app: Flask) -> None:
    from .errors.handlers import register

    register(app)


def register_request_hooks(app: Flask) -> None:
    from . import request_log
    from .security import register

    request_log.register(app)  # JSON request lines on stdout (deployment)
    register(app)


def register_cli(app: Flask) -> None:
    from .cli import audit_cli, predictions_cli, users_cli
    from .jobs.cli import jobs_cli
    from .pacs.cli import dicom_cli
    from .validation.cli import validation_cli

    app.cli.add_command(users_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(predictions_cli)
    app.cli.add_command(jobs_cli)
    app.cli.add_command(dicom_cli)
    app.cli.add_command(validation_cli)
