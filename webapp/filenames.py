"""Upload file names are user input: keep what a person recognises, drop what could do harm.

They are also often the one patient identifier a PACS export carries (DOE_JANE_MRN555123.dcm),
so by default the app stores and shows a neutral name instead (see `anonymous_filename`).
"""

import re
import unicodedata

MAX_LENGTH = 200
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")


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
