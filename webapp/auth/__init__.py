from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from . import recheck, routes, sessions  # noqa: E402

bp.add_app_template_global(sessions.auto_refresh_url)
bp.add_app_template_global(sessions.refresh_stopped)
bp.add_app_template_global(sessions.refresh_switch_url)
__all__ = ["bp", "recheck", "routes"]
