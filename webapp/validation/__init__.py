"""Validation runs on the site's own labelled films, their reports, and the site operating point (admins)."""

from flask import Blueprint, abort
from flask_login import current_user

bp = Blueprint("validation", __name__, url_prefix="/admin/validation")


@bp.before_request
def require_admin():
    # The sign-in wall has already run: anyone here is signed in, so a non-admin is forbidden.
    if not current_user.is_admin:
        abort(403)


from . import routes, tasks  # noqa: E402,F401  (tasks: registers the job with the queue)
