from flask import Blueprint

bp = Blueprint("screening", __name__)

from . import routes  # noqa: E402,F401
