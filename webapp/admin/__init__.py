from flask import Blueprint, abort
from flask_login import current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin():
    # The sign-in wall has already run: anyone here is signed in, so a non-admin is forbidden.
    if not current_user.is_admin:
        abort(403)


from . import routes  # noqa: E402,F401
