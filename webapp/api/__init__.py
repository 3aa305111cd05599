from flask import Blueprint

from ..ratelimits import limit_api_blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
limit_api_blueprint(bp)

from . import routes  # noqa: E402,F401
