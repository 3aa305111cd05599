"""Upload file names are user input: keep what a person recognises, drop what could do harm.

They are also often the one patient identifier a PACS export carries (DOE_JANE_MRN555123.dcm),
so by default the app stores and shows a neutral name instead (see `anonymous_filename`).
"""

import re
import unicodedata

from werkzeug.datastructures import FileStorage

MAX_LENGTH = 200
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")
# The file name parameter of an upload's Content-Disposition, quoted or bare, as it was sent.
_SENT_NAME = re.compile(r';\s*filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)


def sent_filename(upload: FileStorage) -> str | None:
    """The name an upload was sent with, its backslashes as sent, for `sanitize_filename` to cut.

    Werkzeug reads the name as an RFC quoted-string, where a backslash escapes the next character,
    but browsers and Windows clients send C:\\Users\\dr\\x.jpg verbatim: werkzeug's name for it is
    "C:Usersdrx.jpg", the folders run into the name, and no separator is left to cut them at.
    """
    disposition = upload.headers.get("Content-Disposition", "")
    match = _SENT_NAME.search(disposition)
    if match is None or "filename*" in disposition.lower():  # an RFC 5987 name: werkzeug decodes it
        return upload.filename
    name = match.group(1).strip()
    if len(name) > 1 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"')  # the one escape a name can need; \\ is a separator either way
    return name


def sanitize_filename(name: str | None) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]  # no directories, either convention
    # Control characters (NUL included) and format characters such as right-to-left overrides go.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().strip(".") or "upload"
    if len(name) <= MAX_LENGTH:
        return name
    # Shortened from the middle: the extension is what the stored name keeps (anonymous_filename).
    extension = match.group(0) if (match := _EXTENSION.search(name)) else ""
    return name[: MAX_LENGTH - len(extension)] + extension


def anonymous_filename(prediction_id: int, index: int, original: str) -> str:
    """`upload-<prediction id>-<position in its upload>` plus the original extension, nothing else."""
    match = _EXTENSION.search(original)
    return f"upload-{prediction_id}-{index}" + (f".{match.group(1).lower()}" if match else "")
