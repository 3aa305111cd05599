from flask import Blueprint

bp = Blueprint("preferences", __name__, url_prefix="/preferences")

from . import routes  # noqa: E402,F401
