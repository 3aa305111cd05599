"""Upload file names are user input: keep what a person recognises, drop what could do harm."""

import unicodedata

MAX_LENGTH = 200


def sanitize_filename(name: str | None) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]  # no directories, either convention
    # Control characters (NUL included) and format characters such as right-to-left overrides go.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().strip(".") or "upload"
    return name[:MAX_LENGTH]
