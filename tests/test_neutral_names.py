"""`flask --app wsgi predictions neutral-names`: uploads stored under the name they were sent with.

Found by the upgrade review: uploads saved before neutral names came in (2 December) kept the name
they were sent with through every upgrade (`DOE_JANE_MRN555123_chest.jpg` in history, the CSV export,
GET /api/v1/predictions/1 and the database file), against docs/security.md's data inventory.
"""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import add_prediction
from webapp.extensions import db
from webapp.models import AuditEvent, Prediction


def stored_names(app) -> dict[int, str]:
    with app.app_context():
        return dict(db.session.execute(select(Prediction.id, Prediction.filename)).all())


def test_uploads_stored_as_sent_get_their_neutral_names(app, runner, clinician_user):
    with app.app_context():
        sent = add_prediction(clinician_user, filename="DOE_JANE_MRN555123_chest.jpg", source="api")
        bare = add_prediction(clinician_user, filename="scan")
        neutral = add_prediction(clinician_user, filename="upload-7-2.png")
        pacs = add_prediction(None, filename="pacs-3.dcm", source="dicom")
    declined = runner.invoke(args=["predictions", "neutral-names"], input="n\n")
    assert declined.exit_code == 1 and "Replace the stored names of 2 upload(s)?" in declined.output
    assert stored_names(app)[sent] == "DOE_JANE_MRN555123_chest.jpg"

    result = runner.invoke(args=["predictions", "neutral-names", "--yes"])
    assert result.exit_code == 0 and "2 upload(s) are now stored under a neutral name." in result.output
    assert stored_names(app) == {
        sent: f"upload-{sent}-1.jpg",
        bare: f"upload-{bare}-1",
        neutral: "upload-7-2.png",
        pacs: "pacs-3.dcm",
    }
    with app.app_context():
        trail = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "filenames_neutralised")).all()
        assert [(e.actor, e.target) for e in trail] == [("cli:operator", "2 predictions")]
        assert "MRN555123" not in f"{trail[0].target} {trail[0].details}"
    again = runner.invoke(args=["predictions", "neutral-names", "--yes"])
    assert again.exit_code == 0 and "already stored under a neutral name" in again.output


def test_a_site_that_keeps_the_names_as_sent_is_told_first(app, runner, clinician_user):
    app.config["STORE_ORIGINAL_FILENAMES"] = True
    with app.app_context():
        sent = add_prediction(clinician_user, filename="DOE_JANE.jpg")
    result = runner.invoke(args=["predictions", "neutral-names", "--yes"])
    assert result.exit_code == 1 and "STORE_ORIGINAL_FILENAMES is set" in result.output
    assert stored_names(app)[sent] == "DOE_JANE.jpg"
