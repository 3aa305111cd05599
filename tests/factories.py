"""Rows for list and filter tests, written directly so those tests need not run the model."""

from datetime import UTC, datetime

from webapp.extensions import db
from webapp.inference.labels import NORMAL, PNEUMONIA
from webapp.models import Feedback, Prediction, PredictionImages, ValidationItem, ValidationRun
from webapp.validation.report import figures
from webapp.validation.site import current_model_version

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200015e2e5a9d0000000049454e44ae426082"
)


def add_prediction(
    user_id: int | None,
    label: str = "NORMAL",
    when: datetime | None = None,
    version: str = "v-test",
    filename: str = "x.jpeg",
    feedback: str | None = None,
    source: str = "upload",
    p_pneumonia: float | None = None,
) -> int:
    if p_pneumonia is None:
        p_pneumonia = {"NORMAL": 0.1, "PNEUMONIA": 0.9, "UNKNOWN": 0.5}[label]
    row = Prediction(
        user_id=user_id,
        source=source,
        filename=filename,
        sha256="0" * 64,
        image_format="JPEG",
        file_size=10,
        width=224,
        height=224,
        label=label,
        p_normal=1 - p_pneumonia,
        p_pneumonia=p_pneumonia,
        threshold=0.5,
        model_version=version,
        latency_ms=12.0,
        facts={},
        unknown_reason="not a chest radiograph" if label == "UNKNOWN" else None,
        images=PredictionImages(review_png=PNG_1PX, heatmap_png=PNG_1PX),
        created_at=when or datetime.now(UTC),
    )
    db.session.add(row)
    db.session.flush()
    if feedback:
        db.session.add(Feedback(prediction_id=row.id, user_id=user_id or 1, label=feedback, comment=""))
    db.session.commit()
    return row.id


def add_validation_run(created_by: int, items=(), **columns) -> int:
    """A finished validation run of the shipped model, with no archive read: `items` are its films
    (ValidationItem fields each), `columns` set or override the run's own (threshold, metrics)."""
    run = ValidationRun(
        **{
            "archive_name": "site.zip",
            "archive_sha256": "0" * 64,
            "status": "done",
            "model_version": current_model_version(),
            **columns,
        },
        created_by_id=created_by,
    )
    db.session.add(run)
    db.session.flush()
    db.session.add_all(ValidationItem(run_id=run.id, **item) for item in items)
    db.session.commit()
    return run.id


def add_run_of_spread_scores(admin_id: int) -> int:
    """A finished run of 60 films a class whose proposals all lie well inside (0.05, 0.95), so each can be
    adopted (the fixture films' own run scores them too confidently: every proposal at 0.9946)."""
    truths = [NORMAL] * 60 + [PNEUMONIA] * 60
    scores = [0.1 + 0.4 * i / 60 for i in range(60)] + [0.3 + 0.5 * i / 60 for i in range(60)]
    metrics = figures(truths, scores, [PNEUMONIA if s >= 0.5 else NORMAL for s in scores], 0.5, 0.05)
    metrics.update(unknown_reasons={}, refused=0, refused_files=[], films_in_archive=120)
    metrics.update(duplicates=[], worst_errors=[])
    films = [{"entry": f"{t}/{i}.png", "truth": t, "state": "done"} for i, t in enumerate(truths)]
    return add_validation_run(admin_id, films, threshold=0.5, metrics=metrics)
