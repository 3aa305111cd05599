"""File names can identify patients: by default they are echoed to the sender only, never stored."""

from __future__ import annotations

import io
import logging

import pytest
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.http import parse_options_header

from tests.helpers import PASSWORDS, csrf_token, fixture_image, issue_token, make_user, reset_database
from webapp import create_app
from webapp.config import TestingConfig
from webapp.extensions import db
from webapp.filenames import MAX_LENGTH, anonymous_filename, sanitize_filename, sent_filename

NAME = "DOE_JANE_MRN555123_chest.jpg"
SECRET = "MRN555123"


def file_app(tmp_path, **overrides):
    """An app on an SQLite file, so the test can read the bytes the database keeps."""
    app = create_app(
        TestingConfig,
        {"INSTANCE_DIR": tmp_path, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'cxr.sqlite'}", **overrides},
    )
    with app.app_context():
        reset_database()
    for name, role in (("clin", "clinician"), ("admin", "admin")):
        make_user(app, name, role)
    return app


def sign_in(client, name: str) -> None:
    token = csrf_token(client, "/auth/login")
    client.post("/auth/login", data={"username": name, "password": PASSWORDS[name], "csrf_token": token})


def database_bytes(app, tmp_path) -> bytes:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()  # checkpoints the write-ahead log into the file
    return b"".join(path.read_bytes() for path in tmp_path.glob("cxr.sqlite*"))


def test_a_patient_name_in_a_file_name_is_echoed_once_and_stored_nowhere(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    app = file_app(tmp_path)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issue_token(app, 'clin')}"}
    image = fixture_image("normal.jpeg")

    posted = client.post("/api/v1/predictions", headers=headers, data={"file": (io.BytesIO(image), NAME)})
    assert posted.status_code == 201
    (item,) = posted.json["predictions"]
    assert item["filename"] == NAME  # the answer to the upload that sent it
    read = client.get(f"/api/v1/predictions/{item['id']}", headers=headers)
    assert read.json["filename"] == f"upload-{item['id']}-1.jpg"

    sign_in(client, "clin")
    page = client.post(
        "/screen",
        data={"csrf_token": csrf_token(client, "/screen"), "files": [(io.BytesIO(image), NAME)]},
        content_type="multipart/form-data",
    )
    results = client.get(page.headers["Location"]).get_data(as_text=True)
    assert NAME in results  # the upload page's immediate result names the file that was sent
    again = client.get(page.headers["Location"]).get_data(as_text=True)
    seen = [read.get_data(as_text=True), again, client.get("/history/").get_data(as_text=True)]
    seen += [client.get(f"/predictions/{item['id'] + 1}").get_data(as_text=True)]
    client.post("/auth/logout", data={"csrf_token": csrf_token(client, "/screen")})

    sign_in(client, "admin")
    seen += [
        client.get(path).get_data(as_text=True) for path in ("/admin/history", "/admin/history.csv", "/admin/audit")
    ]
    admin_headers = {"Authorization": f"Bearer {issue_token(app, 'admin')}"}
    seen += [client.get("/api/v1/predictions", headers=admin_headers).get_data(as_text=True)]
    seen += [client.get("/api/v1/audit-events", headers=admin_headers).get_data(as_text=True)]
    seen += [caplog.text]
    for text in seen:
        assert SECRET not in text
    assert "upload-" in seen[-5]  # the CSV lists the neutral names
    assert SECRET.encode() not in database_bytes(app, tmp_path)


def test_store_original_filenames_keeps_them(tmp_path):
    app = file_app(tmp_path, STORE_ORIGINAL_FILENAMES=True)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issue_token(app, 'clin')}"}
    posted = client.post(
        "/api/v1/predictions", headers=headers, data={"file": (io.BytesIO(fixture_image("normal.jpeg")), NAME)}
    )
    assert (
        client.get(f"/api/v1/predictions/{posted.json['predictions'][0]['id']}", headers=headers).json["filename"]
        == NAME
    )
    assert SECRET.encode() in database_bytes(app, tmp_path)


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("scan.DCM", "upload-7-2.dcm"),
        ("no-extension", "upload-7-2"),
        ("a.b.jpeg", "upload-7-2.jpeg"),
        ("x.<script>", "upload-7-2"),
        ("weird.verylongextension", "upload-7-2"),
    ],
)
def test_neutral_names_keep_only_a_plain_extension(original, expected):
    assert anonymous_filename(7, 2, original) == expected


def test_a_long_name_keeps_its_extension():
    """Cut at 200 characters, a long name lost its extension, and the stored name with it (upload-7-2)."""
    shortened = sanitize_filename("a" * 300 + ".dcm")
    assert len(shortened) == MAX_LENGTH and shortened.endswith("a.dcm")
    assert anonymous_filename(7, 2, shortened) == "upload-7-2.dcm"
    assert sanitize_filename("b" * 300) == "b" * MAX_LENGTH


WINDOWS_PATH = "C:\\Users\\drsmith\\films\\" + NAME


def test_a_windows_path_keeps_only_its_last_part(tmp_path):
    """Browsers and Windows clients send C:\\Users\\drsmith\\films\\x.jpg with its backslashes bare; read as
    escapes, they vanished and the answer, the results page and the stored name said
    "C:Usersdrsmithfilmsx.jpg": the folder names, a user's name among them, echoed and kept."""
    app = file_app(tmp_path, STORE_ORIGINAL_FILENAMES=True)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issue_token(app, 'clin')}"}
    image = fixture_image("normal.jpeg")
    posted = client.post("/api/v1/predictions", headers=headers, data={"file": (io.BytesIO(image), WINDOWS_PATH)})
    (item,) = posted.json["predictions"]
    assert item["filename"] == NAME
    assert client.get(f"/api/v1/predictions/{item['id']}", headers=headers).json["filename"] == NAME

    sign_in(client, "clin")
    page = client.post(
        "/screen",
        data={"csrf_token": csrf_token(client, "/screen"), "files": [(io.BytesIO(image), WINDOWS_PATH)]},
        content_type="multipart/form-data",
    )
    assert NAME in client.get(page.headers["Location"]).get_data(as_text=True)
    assert b"drsmith" not in database_bytes(app, tmp_path)


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('form-data; name="file"; filename="C:\\Users\\dr\\x.jpg"', "x.jpg"),  # sent verbatim, as browsers do
        ('form-data; name="file"; filename="C:\\\\Users\\\\dr\\\\x.jpg"', "x.jpg"),  # escaped, as RFC 2616 has it
        ('form-data; name="file"; filename=C:\\Users\\dr\\x.jpg', "x.jpg"),  # unquoted
        ('form-data; name="file"; filename="a\\"b.jpg"', 'a"b.jpg'),  # an escaped quote is not a separator
        ('form-data; name="file"; filename="../../etc/x.jpg"', "x.jpg"),
        ('form-data; name="file"; filename="x.jpg"; filename*=UTF-8\'\'%C3%A9.jpg', "é.jpg"),  # RFC 5987 wins
    ],
)
def test_the_sent_name_is_cut_at_either_separator(disposition, expected):
    upload = FileStorage(  # as werkzeug's form parser makes it
        io.BytesIO(b""),
        filename=parse_options_header(disposition)[1].get("filename"),
        headers=Headers({"Content-Disposition": disposition}),
    )
    assert sanitize_filename(sent_filename(upload)) == expected
