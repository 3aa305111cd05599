"""The JSON API (/api/v1): flask-smorest routes whose marshmallow schemas parse, validate and document."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Blueprint

from ..ratelimits import limit_api_blueprint
from .errors import ApiError, ArgumentParser, api_error

BASE_PATH = "/api/v1"


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = ArgumentParser()

    def add_url_rule(self, rule, endpoint=None, view_func=None, provide_automatic_options=None, **options):
        """API paths are matched as written: werkzeug would otherwise answer `/api/v1//predictions` with
        a 308 to `/api/v1/predictions` and an HTML page as its body (Flask hands routing redirects to no
        error handler), and a script would re-send its upload there. An address with an empty segment
        is an unknown path, 404 with the error body like any other (docs/api.md)."""
        options.setdefault("merge_slashes", False)
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)

    def errors(self, *answers: tuple[int, object, str | None]):
        """The refusals an operation can answer, as one table of (status, schema, description): one
        `alt_response` each, in the order of a written decorator stack. A schema given as a string
        names one of flask-smorest's shared responses (e.g. "REQUEST_ENTITY_TOO_LARGE")."""

        def decorate(view):
            for status, schema, description in reversed(answers):
                if isinstance(schema, str):
                    view = self.alt_response(status, response=schema)(view)
                else:
                    view = self.alt_response(status, schema=schema, description=description)(view)
            return view

        return decorate


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
