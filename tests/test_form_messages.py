"""A refused form's messages name their fields and read as sentences, in a flash and beside the field.

Found by the admin pages' review: a form refused for several reasons flashed "Token not issued: Field
cannot be longer than 64 characters.; Number must be between 1 and 3650.", which names neither field
and joins two sentences with ".;". Each message now names its field (WTForms' own "Field", "This
field" and "Number" become the field's label; another message not naming it gets "Label: " before
it), and the messages are joined as sentences.
"""

from __future__ import annotations

import io

from tests.factories import add_prediction, add_validation_run
from tests.helpers import csrf_token, token_form
from tests.test_form_errors import error_read_with


def flashed(client, response) -> str:
    assert response.status_code in (302, 303), response.status_code
    return client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_token_form_names_each_refused_field(client, auth, admin_user):
    auth.login("admin")
    answer = client.post(
        f"/admin/users/{admin_user}/tokens", data={**token_form(client), "name": "n" * 65, "days": "0"}
    )
    page = flashed(client, answer)
    assert (
        "Token not issued: Token name cannot be longer than 64 characters. "
        "Valid for (days) must be between 1 and 3650." in page
    ), page
    answer = client.post(f"/admin/users/{admin_user}/tokens", data={**token_form(client), "days": "ten"})
    assert "Token not issued: Valid for (days): Not a valid integer value." in flashed(client, answer)


def test_the_users_page_names_the_field_beside_it_and_in_the_flashes(client, auth, admin_user, clinician_user):
    auth.login("admin")
    token = csrf_token(client, "/admin/users")
    page = client.post("/admin/users", data={"csrf_token": token, "username": "x" * 65}).get_data(as_text=True)
    assert "Username must be between 2 and 64 characters long." in error_read_with(page, "username")
    assert "Initial password is required." in error_read_with(page, "password")
    answer = client.post(f"/admin/users/{clinician_user}/password", data={"csrf_token": token, "password": "short"})
    assert "Password not reset: New password: Passwords need at least 12 characters." in flashed(client, answer)
    # A hidden field's message says what to do, with no name the user never saw.
    answer = client.post(f"/admin/users/{clinician_user}/active", data={"csrf_token": token, "active": "2"})
    assert "Nothing was changed: Reload the Users page and try again." in flashed(client, answer)


def test_the_password_page_names_each_field(client, auth, clinician_user):
    auth.login("clin")
    token = csrf_token(client, "/auth/password")
    page = client.post("/auth/password", data={"csrf_token": token}).get_data(as_text=True)
    for control, label in (("current_password", "Current password"), ("new_password", "New password")):
        assert f"{label} is required." in error_read_with(page, control)
    assert "New password again is required." in error_read_with(page, "confirm")


def test_the_review_and_theme_flashes_name_their_fields(app, client, auth, clinician_user):
    with app.app_context():
        film = add_prediction(clinician_user)
    auth.login("clin")
    token = csrf_token(client, f"/predictions/{film}")
    answer = client.post(
        f"/predictions/{film}/feedback", data={"csrf_token": token, "label": "", "comment": "c" * 2001}
    )
    assert (
        "The review was not saved: Radiologist&#39;s reading: Choose your reading. "
        "Comment cannot be longer than 2000 characters." in flashed(client, answer)
    )
    answer = client.post("/preferences/theme", data={"csrf_token": token, "theme": "neon"})
    assert "The theme was not changed: Theme: Not a valid choice." in flashed(client, answer)


def test_the_validation_forms_name_their_fields(app, client, auth, admin_user):
    auth.login("admin")
    token = csrf_token(client, "/admin/validation/")
    page = client.post("/admin/validation/", data={"csrf_token": token}).get_data(as_text=True)
    assert "Labelled archive (ZIP): Choose a ZIP file." in page
    with app.app_context():
        run_id = add_validation_run(admin_user)
    answer = client.post(
        f"/admin/validation/{run_id}/adopt", data={"csrf_token": token, "threshold": "x", "reason": "ab"}
    )
    assert (
        "The threshold was not adopted: Threshold: Not a valid float value. The reason needs 5 to 500 characters."
        in flashed(client, answer)
    )


def test_the_export_and_upload_refusals_name_their_fields(client, auth, admin_user):
    auth.login("admin")
    answer = client.get("/admin/history.csv?date_from=yesterday")
    assert "The export filters are not valid: From: Not a valid date value." in flashed(client, answer)
    token = csrf_token(client, "/screen")
    refused = client.post("/screen", data={"csrf_token": token}, headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert "Chest radiographs: Choose at least one file." in refused.get_data(as_text=True)
    empty = client.post("/screen", data={"csrf_token": token, "files": (io.BytesIO(b""), "")})
    assert "Chest radiographs: Choose at least one file." in empty.get_data(as_text=True)
