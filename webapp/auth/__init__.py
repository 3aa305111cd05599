from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from . import recheck, routes, sessions  # noqa: E402

bp.add_app_template_global(sessions.auto_refresh_url)
__all__ = ["bp", "recheck", "routes"]
