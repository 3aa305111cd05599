"""Screen a batch of uploaded files and log each one: the path shared by the upload page and the API.

Everything that can fail for a file (decoding, the model) runs before anything is written for
it, so a refused file leaves no row and no stored image behind, and one bad file in a batch
does not cost the others their results.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flask import current_app
from sqlalchemy.exc import OperationalError

from ..extensions import db
from ..filenames import anonymous_filename, sanitize_filename
from ..inference.analyzer import Analysis
from ..inference.decode import DecodeError, decode
from ..inference.image import DecodedImage
from ..inference.labels import NORMAL, PNEUMONIA
from ..inference.overlay import heatmap_png
from ..inference.runtime import ModelUnavailable, analyzer_for, known_unavailable
from ..models import SOURCE_UPLOAD, Prediction, PredictionImages, User
from ..refusal import DATABASE_UNAVAILABLE, Refusal
from ..site_threshold import operating_point
from . import review_copy

log = logging.getLogger(__name__)

SCREENING_FAILED = (
    "This file could not be screened because of an error on our side; the error was logged. "
    "Any other files in the upload were screened as usual."
)
# Refusal codes that mean "not a kind of file we take" rather than "a broken file".
UNSUPPORTED_CODES = frozenset({"unsupported_type", "not_an_image"})


class UploadRejected(Refusal):
    """An uploaded file, or the whole upload, refused."""


@dataclass(frozen=True)
class Screened:
    """One file's outcome: a logged prediction, or the reason it was refused."""

    filename: str  # the sanitised original: echoed to the sender, stored only with STORE_ORIGINAL_FILENAMES
    prediction: Prediction | None = None
    rejection: UploadRejected | None = None


# Said on the upload page before any file is chosen; the admin finds the cause on /readyz.
SCREENING_UNAVAILABLE = (
    "Screening is not available on this server right now: files uploaded here cannot be screened. Please tell IT."
)


def analyzer():
    try:
        return analyzer_for(current_app.config)
    except ModelUnavailable as exc:
        raise UploadRejected(
            "model_unavailable",
            "The screening model is not available on this server right now. Please try again later or contact IT.",
            503,
        ) from exc


def screening_unavailable() -> str | None:
    """The upload page's notice while this worker's model failed to load and its file is unchanged;
    None otherwise. Loads nothing: until 5 December the page said nothing, and a clinician learnt
    that screening was down only after choosing and uploading the films."""
    return SCREENING_UNAVAILABLE if known_unavailable(current_app.config["MODEL_PATH"]) else None


def check_batch_size(count: int) -> None:
    limit = current_app.config["MAX_FILES_PER_UPLOAD"]
    if count == 0:
        raise UploadRejected("no_file", "Choose at least one file to screen.", 400)
    if count > limit:
        raise UploadRejected("too_many_files", f"At most {limit} files per upload.", 400)


def screen_batch(
    user: User, uploads: Iterable[tuple[str | None, bytes]], source: str = SOURCE_UPLOAD
) -> list[Screened]:
    """Screen each (file name, bytes) upload of one request, in order; see `Screened`. `source`: where
    the request came from (models.SOURCES)."""
    uploads = list(uploads)
    check_batch_size(len(uploads))
    outcomes = []
    for index, (raw_name, data) in enumerate(uploads, start=1):
        filename = sanitize_filename(raw_name)
        try:
            # Each saved prediction leaves the session with its own copy of the user, all loaded: a
            # later file's database failure rolls the session back, which expires what is still in it,
            # and the saved films' answers would then be read back from the database that just failed.
            prediction = screen_upload(db.session.merge(user, load=False), filename, data, source, index)
            db.session.expunge(prediction.user)
            db.session.expunge(prediction)
            outcomes.append(Screened(filename, prediction=prediction))
        except UploadRejected as exc:
            outcomes.append(Screened(filename, rejection=exc))
        except OperationalError:
            # The database, not this file: the whole request is refused as such (errors/handlers.py)
            # unless files before this one were saved, whose answers must not be lost with it.
            db.session.rollback()
            if not any(outcome.prediction for outcome in outcomes):
                raise
            log.error("database unavailable at file %d of an upload", index)
            rejection = UploadRejected("database_unavailable", DATABASE_UNAVAILABLE, 503)
            outcomes.append(Screened(filename, rejection=rejection))
        except Exception:  # a fault of ours with one file, e.g. pixels no check foresaw
            # The files before it are committed and stay answered; this one leaves nothing behind,
            # and the files after it are still screened.
            db.session.rollback()
            log.exception("screening file %d of an upload failed", index)
            outcomes.append(Screened(filename, rejection=UploadRejected("screening_failed", SCREENING_FAILED, 500)))
    return outcomes


def screen_upload(user: User, filename: str, data: bytes, source: str = SOURCE_UPLOAD, index: int = 1) -> Prediction:
    started = time.perf_counter()
    model = analyzer()
    try:
        image = decode(data, target_size=model.input_size, memory_mb=current_app.config["DECODE_MEMORY_MB"])
    except DecodeError as exc:
        status = 415 if exc.code in UNSUPPORTED_CODES else 413 if exc.code == "too_large_to_decode" else 422
        raise UploadRejected(exc.code, exc.message, status) from exc
    background = current_app.config["REVIEW_COPY_IN_BACKGROUND"]
    prediction, _, later = analyse(model, image, data, review_in_background=background)
    # The relationship, not only the id: the answer names the submitter without another query.
    prediction.user, prediction.filename, prediction.source = user, filename, source
    prediction.latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
    db.session.add(prediction)
    if not current_app.config["STORE_ORIGINAL_FILENAMES"]:
        # The neutral name needs the row's id: same transaction, the original never reaches the database.
        prediction.filename = ""
        db.session.flush()
        prediction.filename = anonymous_filename(prediction.id, index, filename)
    db.session.commit()
    if later:
        size = current_app.config["REVIEW_IMAGE_SIZE"]
        review_copy.upgrade_later(current_app._get_current_object(), prediction.id, data, size)
    return prediction


def analyse(
    model, image: DecodedImage, data: bytes, review_in_background: bool = False
) -> tuple[Prediction, Analysis, bool]:
    """The model's answer for one decoded film, at the site operating point in force, as an unsaved
    Prediction (the caller sets who and where it came from), the Analysis it was made from, and
    whether the full-size review copy is still to be made (review_copy.upgrade_later, once committed)."""
    # The site operating point in force for this model version, if any (site_threshold.py).
    point = operating_point(model.model_version)
    pending = model.submit(image, threshold=point.threshold if point else None)
    # The review copy needs the pixels, not the answer: made while the inference thread runs the model
    # (PNG encoding and the forward pass both release the interpreter lock, so on two cores they overlap),
    # where this thread used to wait for the answer first. A big film's full-size copy is made after the
    # answer (see review_copy).
    size, budget = current_app.config["REVIEW_IMAGE_SIZE"], current_app.config["DECODE_MEMORY_MB"]
    review, later = review_copy.at_upload(data, image, size, review_in_background, budget)
    analysis = pending.result()
    prediction = Prediction(
        sha256=hashlib.sha256(data).hexdigest(),
        image_format=image.format,
        file_size=len(data),
        width=image.width,
        height=image.height,
        label=analysis.label,
        p_normal=float(analysis.probabilities[NORMAL]),
        p_pneumonia=float(analysis.probabilities[PNEUMONIA]),
        threshold=float(analysis.threshold),
        site_calibration_id=point.calibration_id if point else None,
        chest_probability=float(analysis.chest_probability),
        feature_distance=float(analysis.feature_distance),
        model_version=analysis.model_version,
        unknown_reason=analysis.unknown_reason,
        caution=analysis.caution,
        facts=dict(image.facts),
        # The map alone; the coloured overlay is drawn only when a page shows it.
        images=PredictionImages(review_png=review, heatmap_png=heatmap_png(analysis.heatmap)),
        latency_ms=0.0,
        # A new film has no reading yet: said here, the answer needs no SELECT to find that out.
        feedback=None,
    )
    return prediction, analysis, later
