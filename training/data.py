"""Data: the Kermany manifest, the patient-grouped validation split, the not-chest sources,
and the preprocessed arrays (cached once, because decoding is the same every epoch).

Every image goes through `webapp.inference.decode.decode` and
`webapp.inference.preprocess.preprocess`, exactly as in the web app.
"""

from __future__ import annotations

import csv
import hashlib
import pathlib
import random
from dataclasses import dataclass

import numpy as np

from webapp.inference.decode import decode
from webapp.inference.image import DecodedImage
from webapp.inference.preprocess import preprocess

DEFAULT_DATA_DIR = pathlib.Path("../shared/data/chest_xray")
CACHE_DIR = pathlib.Path("training/runs/cache")
LABELS = {"NORMAL": 0, "PNEUMONIA": 1}
# not_cxr sources kept out of training and used to measure how UNKNOWN generalises: another
# body part's radiograph, another modality, grayscale photographs and colour photographs.
HELD_OUT_SOURCES = ("hand_rsna_boneage", "brainmri_nickparvar", "yalefaces", "bsd68")


@dataclass(frozen=True)
class LabelledFilm:
    path: pathlib.Path
    label: int  # 0 NORMAL, 1 PNEUMONIA
    patient: str  # films are split by patient, never by film


@dataclass(frozen=True)
class Film(LabelledFilm):
    """A Kermany film; `subtype` is bacterial or viral for pneumonia, empty for normal."""

    subtype: str


@dataclass(frozen=True)
class NotChest:
    path: pathlib.Path
    kind: str
    source_id: str


def read_films(data_dir: pathlib.Path, split: str) -> list[Film]:
    with open(data_dir / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    return [Film(data_dir / r["file"], LABELS[r["label"]], r["patient"], r["subtype"]) for r in rows]


def read_not_chest(not_cxr_dir: pathlib.Path) -> list[NotChest]:
    with open(not_cxr_dir / "manifest.csv", newline="") as handle:
        return [NotChest(not_cxr_dir / r["file"], r["kind"], r["source_id"]) for r in csv.DictReader(handle)]


def split_by_patient(films: list[Film], val_fraction: float, seed: int) -> tuple[list[Film], list[Film]]:
    """Stratified patient-level split: all films of a patient land on the same side."""
    rng = random.Random(seed)
    patients: dict[str, int] = {}
    for film in films:
        patients[film.patient] = max(patients.get(film.patient, 0), film.label)
    val_patients: set[str] = set()
    for label in sorted(set(patients.values())):
        group = sorted(p for p, lab in patients.items() if lab == label)
        rng.shuffle(group)
        val_patients.update(group[: round(len(group) * val_fraction)])
    train = [f for f in films if f.patient not in val_patients]
    val = [f for f in films if f.patient in val_patients]
    return train, val


def split_not_chest(items: list[NotChest], held_out: tuple[str, ...] = HELD_OUT_SOURCES):
    train = [i for i in items if i.source_id not in held_out]
    val = [i for i in items if i.source_id in held_out]
    return train, val


def decode_file(path: pathlib.Path, size: int) -> DecodedImage:
    # target_size as the web app passes it, so JPEG draft mode behaves identically.
    return decode(path.read_bytes(), target_size=size)


def load_input(path: pathlib.Path, size: int) -> np.ndarray:
    """The model input for one file, exactly as served: (size, size, 1) float32."""
    return preprocess(decode_file(path, size).pixels, size)


def load_inputs(paths: list[pathlib.Path], size: int, cache: bool = True) -> np.ndarray:
    """Stack the model inputs of many files, cached on disk by file list and size."""
    key = hashlib.sha256(("\n".join(map(str, paths)) + f"|{size}").encode()).hexdigest()[:16]
    cache_file = CACHE_DIR / f"inputs_{size}_{key}.npy"
    if cache and cache_file.exists():
        return np.load(cache_file)
    arrays = np.stack([load_input(p, size) for p in paths]) if paths else np.zeros((0, size, size, 1), np.float32)
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, arrays)
    return arrays


def load_pixels(paths: list[pathlib.Path], size: int) -> list[np.ndarray]:
    """Decoded (not yet preprocessed) pixels, for building synthetic negatives."""
    return [decode_file(p, size).pixels for p in paths]
