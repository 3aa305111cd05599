"""The archive check refuses every unusable or dangerous ZIP with a 4xx and its reason."""

from __future__ import annotations

import zipfile

import pytest

from tests.archives import labelled_films, zip_bytes
from webapp.validation.archive import ArchiveRejected, Film, inspect_archive

FILM = b"\xff\xd8\xff\xe0" + b"jpeg-ish" * 100


def inspect(tmp_path, data: bytes, max_files: int = 100, max_bytes: int = 10**9) -> list[Film]:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return inspect_archive(path, max_files=max_files, max_bytes=max_bytes)


def refused(tmp_path, data: bytes, **limits) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as caught:
        inspect(tmp_path, data, **limits)
    return caught.value


def test_folders_label_films_at_any_depth_in_any_case(tmp_path):
    members = {
        "a/b/NORMAL/1.jpeg": FILM,
        "Pneumonia/2.png": FILM,
        "x/normal/deeper/3.dcm": FILM,
        "__MACOSX/NORMAL/._1.jpeg": b"junk",
        "a/.DS_Store": b"junk",
    }
    films = inspect(tmp_path, zip_bytes(members))
    assert films == [
        Film("a/b/NORMAL/1.jpeg", "NORMAL"),
        Film("Pneumonia/2.png", "PNEUMONIA"),
        Film("x/normal/deeper/3.dcm", "NORMAL"),
    ]


def test_label_folders_with_spaces_around_their_names_are_labels(tmp_path):
    # labels.csv labels were trimmed, label folders were not: "PNEUMONIA /a.jpeg" was refused as a file
    # outside the label folders ("PNEUMONIA / (1)"), the space invisible in the message.
    films = inspect(tmp_path, zip_bytes({"PNEUMONIA /a.jpeg": FILM, " normal/b.jpeg": FILM}))
    assert films == [Film("PNEUMONIA /a.jpeg", "PNEUMONIA"), Film(" normal/b.jpeg", "NORMAL")]


def test_labels_csv_paths_are_relative_to_the_csv(tmp_path):
    members = {"set/labels.csv": b"file,label\nimg/a.jpeg,pneumonia\nb.jpeg,NORMAL\n", "set/img/a.jpeg": FILM}
    members["set/b.jpeg"] = FILM
    assert inspect(tmp_path, zip_bytes(members)) == [Film("set/img/a.jpeg", "PNEUMONIA"), Film("set/b.jpeg", "NORMAL")]


def test_appledouble_files_beside_the_films_are_no_films(tmp_path):
    # Found by the site review: films copied by a Mac onto a USB stick or share carry "._<name>"
    # siblings; they were scored as refused films, and beside a labels.csv refused the whole archive.
    folders = {"NORMAL/a.jpeg": FILM, "NORMAL/._a.jpeg": b"\x00\x05\x16\x07", "._NORMAL": b"\x00\x05\x16\x07"}
    assert inspect(tmp_path, zip_bytes(folders)) == [Film("NORMAL/a.jpeg", "NORMAL")]
    listed = {"labels.csv": b"file,label\na.jpeg,NORMAL\n", "a.jpeg": FILM, "._a.jpeg": b"x", "._labels.csv": b"x"}
    assert inspect(tmp_path, zip_bytes(listed)) == [Film("a.jpeg", "NORMAL")]


def test_labels_csv_from_windows_names_folders_with_backslashes(tmp_path):
    # Found by the site review: a labels.csv written on Windows ("imgs\\a.jpeg") matched no member,
    # whether the ZIP's own names used "/" or "\\" (each refused as missing_file).
    csv = b"file,label\r\nimgs\\a.jpeg,Normal\r\nimgs\\b.jpeg,Pneumonia\r\n"
    slashes = {"site/labels.csv": csv, "site/imgs/a.jpeg": FILM, "site/imgs/b.jpeg": FILM}
    assert inspect(tmp_path, zip_bytes(slashes)) == [
        Film("site/imgs/a.jpeg", "NORMAL"),
        Film("site/imgs/b.jpeg", "PNEUMONIA"),
    ]
    backslashes = {"site\\labels.csv": csv, "site\\imgs\\a.jpeg": FILM, "site\\imgs\\b.jpeg": FILM}
    assert [f.truth for f in inspect(tmp_path, zip_bytes(backslashes))] == ["NORMAL", "PNEUMONIA"]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_labels_csv_saved_by_a_spreadsheet_with_semicolons_or_tabs(tmp_path, separator):
    # Found by the site review: Excel in most of Europe saves "CSV" as file;label, refused as
    # bad_labels_csv ("needs a header row with the columns file,label") though the header was there.
    csv = f"file{separator}label\r\na, b.jpeg{separator}Normal\r\n".encode()
    assert inspect(tmp_path, zip_bytes({"labels.csv": csv, "a, b.jpeg": FILM})) == [Film("a, b.jpeg", "NORMAL")]


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("cp1252", "not UTF-8 text (line 2 has a character in another encoding"),  # Excel's plain "CSV"
        ("latin-1", "not UTF-8 text (line 2 has a character in another encoding"),
        ("utf-16", 'UTF-16 text (Excel\'s "Unicode Text")'),  # with its byte-order mark, as Excel saves it
        ("utf-16-le", 'UTF-16 text (Excel\'s "Unicode Text")'),  # without: ASCII then decodes as UTF-8
    ],
)
def test_labels_csv_in_another_encoding_is_told_how_to_save_it(tmp_path, encoding, said):
    """Found by the leftovers review: every such file was answered "labels.csv is not UTF-8 text.", which
    names no way out (Excel offers four kinds of CSV); an ASCII-only UTF-16 file without its byte-order
    mark was refused as having no file,label header."""
    name = "a.jpeg" if encoding == "utf-16-le" else "Résumé.jpeg"
    csv = f"file\tlabel\r\n{name}\tNormal\r\n".encode(encoding)
    error = refused(tmp_path, zip_bytes({"labels.csv": csv, name: FILM}))
    assert error.code == "bad_labels_csv"
    assert error.message.startswith(f"labels.csv is {said}")
    assert 'save it again as "CSV UTF-8 (Comma delimited)" in Excel' in error.message


def test_labels_csv_the_csv_module_cannot_read_is_refused_not_a_500(tmp_path):
    """Found by the leftovers review: a field past the csv module's limit (131,072 characters) raised
    csv.Error out of the archive check, and the upload answered 500."""
    csv = b"file,label\r\n" + b"x" * 200_000 + b",NORMAL\r\n"
    error = refused(tmp_path, zip_bytes({"labels.csv": csv, "a.jpeg": FILM}))
    assert (error.code, error.message) == (
        "bad_labels_csv",
        "labels.csv cannot be read as CSV: field larger than field limit (131072).",
    )


def test_folder_entries_written_with_backslashes_are_folders(tmp_path):
    # Found by the site review: an archive whose folder entries were named "Export\\NORMAL\\" (as
    # Windows' PowerShell writes them) was refused: "not inside a NORMAL or PNEUMONIA folder: Export/".
    members = {"Export\\": b"", "Export\\NORMAL\\": b"", "Export\\NORMAL\\a.jpeg": FILM}
    assert inspect(tmp_path, zip_bytes(members)) == [Film("Export\\NORMAL\\a.jpeg", "NORMAL")]


def test_the_fixture_archive_is_accepted(tmp_path):
    assert len(inspect(tmp_path, zip_bytes(labelled_films(copies=2)))) == 8


def encrypted_zip() -> bytes:
    """A ZIP whose member is flagged encrypted (general-purpose bit 0, in both headers)."""
    data = bytearray(zip_bytes({"NORMAL/a.jpeg": FILM}, zipfile.ZIP_STORED))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


BAD = {
    "not_a_zip": (FILM, 415),
    "empty_archive": (zip_bytes({}), 422),
    "only_folders": (zip_bytes({"NORMAL/": b""}), 422),
    "no_labels": (zip_bytes({"films/a.jpeg": FILM}), 422),
    "unknown_label_folder": (zip_bytes({"NORMAL/a.jpeg": FILM, "COVID/b.jpeg": FILM}), 422),
    "top_level_file": (zip_bytes({"NORMAL/a.jpeg": FILM, "b.jpeg": FILM}), 422),
    "path_traversal": (zip_bytes({"NORMAL/../../../etc/evil.jpeg": FILM}), 400),
    "absolute_path": (zip_bytes({"/NORMAL/a.jpeg": FILM}), 400),
    "windows_drive": (zip_bytes({"C:\\NORMAL\\a.jpeg": FILM}), 400),
    "zip_bomb": (zip_bytes({"NORMAL/a.png": b"\0" * (8 * 1024 * 1024)}), 422),
    "nested_zip_by_name": (zip_bytes({"NORMAL/a.jpeg": FILM, "NORMAL/b.zip": zip_bytes({"c": FILM})}), 422),
    "nested_zip_by_content": (zip_bytes({"NORMAL/a.jpeg": zip_bytes({"c": FILM})}), 422),
    "nested_gzip": (zip_bytes({"NORMAL/a.jpeg": b"\x1f\x8b\x08" + FILM}), 422),
    "encrypted": (encrypted_zip(), 422),
    "csv_unknown_label": (zip_bytes({"labels.csv": b"file,label\na.jpeg,COVID\n", "a.jpeg": FILM}), 422),
    "csv_missing_file": (zip_bytes({"labels.csv": b"file,label\nb.jpeg,NORMAL\n", "a.jpeg": FILM}), 422),
    "csv_unlisted_file": (
        zip_bytes({"labels.csv": b"file,label\na.jpeg,NORMAL\n", "a.jpeg": FILM, "b.jpeg": FILM}),
        422,
    ),
    "csv_no_header": (zip_bytes({"labels.csv": b"a.jpeg;NORMAL\n", "a.jpeg": FILM}), 422),
    "csv_traversal": (zip_bytes({"labels.csv": b"file,label\n../a.jpeg,NORMAL\n", "a.jpeg": FILM}), 422),
    "two_label_files": (zip_bytes({"labels.csv": b"file,label\n", "x/labels.csv": b"file,label\n"}), 422),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_archives_are_refused_with_a_4xx(tmp_path, case):
    data, status = BAD[case]
    error = refused(tmp_path, data)
    assert error.status == status, (error.code, error.message)
    assert error.message


def test_too_many_files(tmp_path):
    error = refused(tmp_path, zip_bytes({f"NORMAL/{i}.jpeg": FILM for i in range(6)}), max_files=5)
    assert (error.code, error.status) == ("too_many_files", 413)


def test_too_many_bytes_once_unpacked(tmp_path):
    error = refused(tmp_path, zip_bytes({"NORMAL/a.jpeg": FILM, "NORMAL/b.jpeg": FILM}), max_bytes=len(FILM) + 10)
    assert (error.code, error.status) == ("archive_too_large", 413)
