"""WSGI entry point for gunicorn and the flask CLI: `flask --app wsgi ...`."""

from webapp.env import exit_on_config_error

# A setting the app cannot run with ends the process with one line naming it (webapp/env.py).
with exit_on_config_error("cxr-screen"):
    from webapp import create_app

    app = create_app()
