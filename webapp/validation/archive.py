"""Inspect an uploaded validation archive before anything is stored for it (no Flask here).

A good archive is a ZIP whose films are labelled either by folders (`NORMAL/` and `PNEUMONIA/`
at any depth: a film's nearest such folder is its label) or by one `labels.csv` with the
columns `file,label` (paths relative to the CSV). Everything that makes an archive unusable or
dangerous is refused here with a code, a message and an HTTP status, so no run is created:
not a ZIP, nothing in it, unlabelled or unknown-labelled files, unsafe member names, encrypted
members, nested archives, too many files, too many bytes once unpacked, and compression ratios
only a zip bomb has. Films that turn out unreadable are not refused here: the run counts them.
"""

from __future__ import annotations

import csv
import io
import posixpath
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..inference.labels import NORMAL, PNEUMONIA
from ..refusal import Refusal

TRUTHS = (NORMAL, PNEUMONIA)
LABELS_CSV = "labels.csv"
MAX_LABELS_CSV_BYTES = 16 * 1024 * 1024
# Spreadsheets save "CSV" with a semicolon where a comma is the decimal mark (most of Europe), and
# with tabs as "text"; the header row (file,label) says which one a labels.csv uses.
LABELS_CSV_DELIMITERS = ",;\t"
# Films compress a little (JPEG, PNG) or up to a few times (raw DICOM); a member that inflates
# more than this, and to more than a megabyte, is a zip bomb, not a film.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1024 * 1024
ARCHIVE_EXTENSIONS = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".jar", ".zst"})
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ", b"ustar")
# Files that operating systems add to archives on their own; they are no films and carry no label.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
# macOS keeps a file's metadata in an AppleDouble sibling "._<name>" on disks without resource forks
# (a USB stick, a network share), and those travel into a ZIP made from there, beside every film.
APPLEDOUBLE_PREFIX = "._"


class ArchiveRejected(Refusal):
    """A validation archive refused before anything is stored for it."""


@dataclass(frozen=True)
class Film:
    entry: str  # the member name inside the ZIP
    truth: str  # NORMAL or PNEUMONIA


def inspect_archive(path: Path, *, max_files: int, max_bytes: int) -> list[Film]:
    """The labelled films of the ZIP at `path`, in archive order; raises ArchiveRejected."""
    if not zipfile.is_zipfile(path):
        raise ArchiveRejected("not_a_zip", "The archive is not a ZIP file.", 415)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, max_files=max_files, max_bytes=max_bytes)
            labels_csv = [m for m in members if posixpath.basename(_posix(m.filename)).lower() == LABELS_CSV]
            if len(labels_csv) > 1:
                raise ArchiveRejected("several_label_files", "The archive holds more than one labels.csv.")
            if labels_csv:
                films = _films_from_csv(archive, labels_csv[0], [m for m in members if m is not labels_csv[0]])
            else:
                films = _films_from_folders(members)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise ArchiveRejected("bad_zip", f"The ZIP file is damaged or uses an unsupported feature ({exc}).") from exc
    return films


def _members(archive: zipfile.ZipFile, *, max_files: int, max_bytes: int) -> list[zipfile.ZipInfo]:
    # A folder's own entry ends in "/", or in "\\" when Windows tools wrote the names (is_dir() misses those).
    members = [m for m in archive.infolist() if not _posix(m.filename).endswith("/") and not _is_junk(m.filename)]
    if not members:
        raise ArchiveRejected("empty_archive", "The archive contains no files.")
    if len(members) > max_files:
        raise ArchiveRejected("too_many_files", f"The archive holds {len(members)} files; at most {max_files}.", 413)
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise ArchiveRejected(
            "archive_too_large",
            f"The archive unpacks to {total / 1e6:.0f} MB; at most {max_bytes / 1e6:.0f} MB.",
            413,
        )
    names = Counter(m.filename for m in members)
    duplicate = next((name for name, count in names.items() if count > 1), None)
    if duplicate:
        raise ArchiveRejected("duplicate_entry", f"The archive holds {duplicate!r} more than once.")
    for member in members:
        _check_member(archive, member)
    return members


def _posix(name: str) -> str:
    """A member name or a labels.csv path with "/" between folders: archives made on Windows use "\\"."""
    return name.replace("\\", "/")


def _is_junk(name: str) -> bool:
    name = _posix(name)
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or base.lower() in JUNK_NAMES or base.startswith(APPLEDOUBLE_PREFIX)


def _check_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    name = member.filename
    parts = _posix(name).split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise ArchiveRejected("unsafe_path", f"Refused: the member name {name!r} points outside the archive.", 400)
    if member.flag_bits & 0x1:
        raise ArchiveRejected("encrypted_member", f"{name!r} is encrypted; upload an archive without a password.")
    if member.file_size > RATIO_CHECK_MIN_BYTES and member.file_size > MAX_COMPRESSION_RATIO * max(
        member.compress_size, 1
    ):
        raise ArchiveRejected(
            "zip_bomb",
            f"Refused: {name!r} would inflate {member.file_size // max(member.compress_size, 1)} times, "
            "which no film does (a zip bomb?).",
        )
    if posixpath.splitext(name.lower())[1] in ARCHIVE_EXTENSIONS or _head(archive, member).startswith(ARCHIVE_MAGIC):
        raise ArchiveRejected("nested_archive", f"{name!r} is itself an archive; put the films in one flat ZIP.")


def _head(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    with archive.open(member) as stream:
        return stream.read(8)


def _label_folder(name: str) -> str | None:
    for folder in reversed(_posix(name).split("/")[:-1]):
        # Spaces around the name, as labels.csv's labels may have them: macOS and Linux keep a
        # folder typed "PNEUMONIA " as it is, and the refusal showed the space nobody could see.
        if folder.strip().upper() in TRUTHS:
            return folder.strip().upper()
    return None


def _films_from_folders(members: list[zipfile.ZipInfo]) -> list[Film]:
    films, unlabelled = [], Counter()
    for member in members:
        truth = _label_folder(member.filename)
        if truth:
            films.append(Film(member.filename, truth))
        else:
            unlabelled[posixpath.dirname(_posix(member.filename)) or "(top level)"] += 1
    if not films:
        raise ArchiveRejected(
            "no_labels",
            "No labels found: put the films in folders named NORMAL and PNEUMONIA, or add a labels.csv "
            "with the columns file,label.",
        )
    if unlabelled:
        shown = ", ".join(f"{folder}/ ({count})" for folder, count in unlabelled.most_common(5))
        raise ArchiveRejected(
            "unknown_label_folder",
            f"{sum(unlabelled.values())} file(s) are not inside a NORMAL or PNEUMONIA folder: {shown}. "
            "Only those two labels are known.",
        )
    return films


def _delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    return max(LABELS_CSV_DELIMITERS, key=header.count)


# How to make the file readable, in the words of the spreadsheet that most sites save it with.
SAVE_AS_UTF8 = (
    'save it again as "CSV UTF-8 (Comma delimited)" in Excel (in LibreOffice: Text CSV, character set '
    "Unicode (UTF-8)) and put it back in the ZIP."
)


def _labels_text(data: bytes) -> str:
    """labels.csv as text, or a refusal that says which encoding it has and how to save it as UTF-8."""
    # Excel's "Unicode Text" is UTF-16 with a byte-order mark; without one, ASCII text in UTF-16
    # still decodes as UTF-8 with a NUL beside every letter, and was refused for its header.
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00\x00" in (data[0:4:2], data[1:4:2]):
        raise ArchiveRejected(
            "bad_labels_csv", f'labels.csv is UTF-16 text (Excel\'s "Unicode Text"), not UTF-8: {SAVE_AS_UTF8}'
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ArchiveRejected(
            "bad_labels_csv",
            f"labels.csv is not UTF-8 text (line {line} has a character in another encoding, such as "
            f'Excel\'s plain "CSV (Comma delimited)", which is Windows-1252 or Latin-1): {SAVE_AS_UTF8}',
        ) from exc


def _films_from_csv(archive: zipfile.ZipFile, labels: zipfile.ZipInfo, members: list[zipfile.ZipInfo]) -> list[Film]:
    if labels.file_size > MAX_LABELS_CSV_BYTES:
        raise ArchiveRejected("bad_labels_csv", "labels.csv is larger than 16 MB.")
    base = posixpath.dirname(_posix(labels.filename))
    text = _labels_text(archive.read(labels))
    reader = csv.DictReader(io.StringIO(text), delimiter=_delimiter(text))
    try:
        header, rows = reader.fieldnames or [], list(reader)
    except csv.Error as exc:  # e.g. a field past the csv module's limit (128 K characters): not a 500
        raise ArchiveRejected("bad_labels_csv", f"labels.csv cannot be read as CSV: {exc}.") from exc
    columns = {(name or "").strip().lower(): name for name in header}
    if "file" not in columns or "label" not in columns:
        raise ArchiveRejected("bad_labels_csv", "labels.csv needs a header row with the columns file,label.")
    by_name = {_posix(m.filename): m for m in members}
    truths: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        file = (row.get(columns["file"]) or "").strip()
        label = (row.get(columns["label"]) or "").strip().upper()
        if label not in TRUTHS:
            raise ArchiveRejected(
                "unknown_label", f"labels.csv line {line}: label {label!r} is neither NORMAL nor PNEUMONIA."
            )
        entry = posixpath.normpath(posixpath.join(base, _posix(file))) if file else ""
        if entry not in by_name:
            raise ArchiveRejected("missing_file", f"labels.csv line {line}: {file!r} is not in the archive.")
        if entry in truths:
            raise ArchiveRejected("duplicate_label", f"labels.csv line {line}: {file!r} is listed twice.")
        truths[entry] = label
    if not truths:
        raise ArchiveRejected("no_labels", "labels.csv lists no films.")
    unlisted = [m.filename for m in members if _posix(m.filename) not in truths]
    if unlisted:
        raise ArchiveRejected(
            "unlabelled_files",
            f"{len(unlisted)} file(s) in the archive are not in labels.csv, e.g. {unlisted[0]!r}.",
        )
    return [Film(m.filename, truths[_posix(m.filename)]) for m in members]
