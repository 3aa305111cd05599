"""WSGI entry point for gunicorn and the flask CLI: `flask --app wsgi ...`."""

from webapp import create_app

app = create_app()
