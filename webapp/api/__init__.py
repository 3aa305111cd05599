"""The JSON API (/api/v1): flask-smorest routes whose marshmallow schemas parse, validate and document."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Blueprint

from ..ratelimits import limit_api_blueprint
from .errors import ApiError, ArgumentParser, api_error

BASE_PATH = "/api/v1"


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = ArgumentParser()


bp = ApiBlueprint("api", __name__, url_prefix=BASE_PATH, description="Screening results for integration scripts.")
limit_api_blueprint(bp)  # every API call counts against its token's and its user's API_RATE_LIMIT


@bp.errorhandler(ApiError)
def answer_api_error(exc: ApiError):
    return api_error(exc.code, exc.message, exc.status)


def register(app: Flask) -> None:
    """Register the blueprint through flask-smorest, which documents every route as it goes."""
    from .spec import create_api

    app.extensions["cxr_api"] = create_api(app, BASE_PATH)
    app.extensions["cxr_api"].register_blueprint(bp)


from . import routes, validation  # noqa: E402,F401
