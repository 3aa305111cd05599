"""Deployment glue that runs around the app, not inside it: gunicorn server hooks and its worker class."""
