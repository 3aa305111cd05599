"""Probes for orchestrators and load balancers; outside the sign-in wall, JSON only."""

from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..inference.runtime import ModelUnavailable, analyzer_for
from . import bp


@bp.route("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz():
    problems = []
    model_version = None
    try:
        model_version = analyzer_for(current_app.config).model_version
    except ModelUnavailable as exc:
        problems.append(str(exc))
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        problems.append(f"database unreachable: {type(exc).__name__}")
    if problems:
        return jsonify(status="unavailable", reasons=problems), 503
    return jsonify(status="ready", model_version=model_version)
