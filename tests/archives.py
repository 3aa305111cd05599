"""ZIP archives for the validation tests, built in memory from the fixture films."""

from __future__ import annotations

import io
import zipfile

from tests.helpers import fixture_image

CHEST_FILMS = {"NORMAL": ["normal.jpeg", "normal_2.jpeg"], "PNEUMONIA": ["pneumonia.jpeg", "pneumonia_2.jpeg"]}


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def labelled_films(copies: int = 1, prefix: str = "site/2026/") -> dict[str, bytes]:
    """Each fixture film `copies` times under NORMAL/ or PNEUMONIA/ folders below `prefix`."""
    members = {}
    for truth, names in CHEST_FILMS.items():
        for name in names:
            data = fixture_image(name)
            for i in range(copies):
                members[f"{prefix}{truth}/{i:03d}-{name}"] = data
    return members
