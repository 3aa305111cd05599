"""The site operating point: a threshold adopted from a validation run, for one model version.

At most one is in force per model version (the latest not withdrawn). Every prediction made
while it is in force uses its threshold and names it; a new model version falls back to its
card's threshold until the site validates that version too.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..inference.decide import threshold_text
from ..inference.labels import NORMAL, PNEUMONIA
from ..inference.model_card import ModelCardError, read_card
from ..models import ITEM_DONE, RUN_DONE, SiteCalibration, User, ValidationItem, ValidationRun, record_audit, utcnow
from ..refusal import Refusal
from ..site_threshold import active_calibration, forget_operating_point
from .archive import TRUTHS

MIN_FILMS_PER_CLASS = 50


class AdoptionRefused(Refusal):
    """A site threshold that cannot be put in force."""


def current_model_version() -> str:
    # The card alone (no weights, no TensorFlow): the version the workers serve.
    return str(_served_card("version"))


def uncertainty_band() -> float:
    """The served model's uncertainty band: films scoring this close to the threshold are UNKNOWN."""
    return float(_served_card("unknown", "uncertainty_band"))


def _served_card(*keys: str):
    try:
        value = read_card(current_app.config["MODEL_PATH"], verify=False)
        for key in keys:
            value = value[key]
        return value
    except (ModelCardError, KeyError, TypeError) as exc:
        raise AdoptionRefused("model_unavailable", "The model card of this server cannot be read.", 503) from exc


def threshold_problem(threshold: float, band: float) -> AdoptionRefused | None:
    """Why `threshold` cannot be a site threshold; None if it can. Within `band` of the threshold a film
    is answered UNKNOWN (too close to call), so a threshold closer than that to 1 leaves no score high
    enough for a PNEUMONIA answer, and one as close to 0 none low enough for NORMAL: at 0.9995, adoptable
    until 5 December, every film scoring over 0.95 would have been UNKNOWN and none PNEUMONIA."""
    if not 0.0 < threshold < 1.0:
        return AdoptionRefused("bad_threshold", "The threshold must lie strictly between 0 and 1.", 400)
    if band < threshold < 1.0 - band:
        return None
    never = PNEUMONIA if threshold >= 0.5 else NORMAL
    return AdoptionRefused(
        "bad_threshold",
        f"At threshold {threshold_text(threshold)} no film could ever be answered {never}: films scoring within "
        f"{band:g} of the threshold are answered UNKNOWN (too close to call), and no score lies beyond that. "
        f"Choose a threshold between {band:g} and {1.0 - band:g}.",
        400,
    )


def films_per_class(run_id: int) -> dict[str, int]:
    rows = db.session.execute(
        select(ValidationItem.truth, func.count())
        .where(ValidationItem.run_id == run_id, ValidationItem.state == ITEM_DONE)
        .group_by(ValidationItem.truth)
    )
    counts = dict.fromkeys(TRUTHS, 0)
    counts.update(dict(rows.all()))
    return counts


def adoption_problem(run: ValidationRun) -> AdoptionRefused | None:
    """Why no threshold of `run` can be put in force, whichever it is; None if one can. The report
    offers Adopt only when there is none: it offered it on every run, and each try, reason typed,
    was refused (a run of 24 films a class: "needs at least 50")."""
    if run.status != RUN_DONE:
        return AdoptionRefused("run_not_done", f"Validation run {run.id} has not finished.", 409)
    try:
        version = current_model_version()
    except AdoptionRefused as exc:
        return exc
    if run.model_version != version:
        return AdoptionRefused(
            "other_model_version",
            f"Validation run {run.id} measured model {run.model_version}; this server runs {version}. "
            "Validate the current model first.",
        )
    counts = films_per_class(run.id)
    short = [f"{truth}: {n}" for truth, n in counts.items() if n < MIN_FILMS_PER_CLASS]
    if short:
        return AdoptionRefused(
            "too_few_films",
            f"A site threshold needs at least {MIN_FILMS_PER_CLASS} scored films of each class; "
            f"run {run.id} has {', '.join(short)}.",
        )
    return None


def adopt(run: ValidationRun, threshold: float, reason: str, user: User) -> SiteCalibration:
    """Put `threshold` from `run` in force for the run's model version; raises AdoptionRefused."""
    problem = adoption_problem(run)
    if problem:
        raise problem
    version = run.model_version
    if refused := threshold_problem(threshold, uncertainty_band()):
        raise refused
    now = utcnow()
    previous = active_calibration(version)
    if previous:
        previous.withdrawn_at, previous.withdrawn_by_id = now, user.id
    calibration = SiteCalibration(
        validation_run_id=run.id,
        model_version=version,
        threshold=threshold,
        reason=reason,
        adopted_by_id=user.id,
        created_at=now,
    )
    db.session.add(calibration)
    try:
        db.session.flush()
    except IntegrityError as exc:
        # Another adoption for this version went in force between our look and our write (the
        # database allows one): this one is refused, so the admin sees which won before choosing again.
        db.session.rollback()
        raise AdoptionRefused(
            "adopted_meanwhile",
            "Another site threshold was adopted for this model at the same moment, so this one was not. "
            "Reload to see the one in force, then adopt again if it is not the one you want.",
            409,
        ) from exc
    record_audit(
        user.username,
        "site_calibration.adopt",
        f"validation run {run.id}",
        f"threshold={threshold:.4f} model={version} calibration={calibration.id} reason={reason}",
    )
    db.session.commit()
    forget_operating_point()
    return calibration


def withdraw(user: User) -> SiteCalibration | None:
    """Withdraw the operating point in force (back to the card's threshold); None if there was none."""
    calibration = active_calibration(current_model_version())
    if calibration is None:
        return None
    now = utcnow()
    # Only if still in force, checked and written in one statement: withdrawing again one that another
    # administrator has just replaced would say "back to the card's threshold" with theirs in force.
    withdrawn = db.session.execute(
        update(SiteCalibration)
        .where(SiteCalibration.id == calibration.id, SiteCalibration.withdrawn_at.is_(None))
        .values(withdrawn_at=now, withdrawn_by_id=user.id)
        .execution_options(synchronize_session=False)
    )
    if withdrawn.rowcount != 1:
        db.session.rollback()
        raise AdoptionRefused(
            "changed_meanwhile",
            "The site threshold in force was changed by someone else while this was sent, so nothing was "
            "withdrawn. Reload to see which threshold is in force now.",
            409,
        )
    calibration.withdrawn_at, calibration.withdrawn_by_id = now, user.id
    record_audit(
        user.username,
        "site_calibration.withdraw",
        f"validation run {calibration.validation_run_id}",
        f"threshold={calibration.threshold:.4f} calibration={calibration.id}",
    )
    db.session.commit()
    forget_operating_point()
    return calibration
