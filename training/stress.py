"""Stress test on validation: how the model's answers move when the validation films are
changed the way another hospital's films differ (softer, lower-resolution, another aspect ratio
squashed to a square). Validation only; nothing here looks at test/.

    python -m training.stress                         # the shipped model
    python -m training.stress --model training/runs/a1/cxr_pneumonia.keras

A model that leans on a shortcut shows it here: when stretching the validation normals by a
fifth makes a quarter of them "pneumonia", the model has learned the thorax's proportions in
the squashed training films, not the lungs.
"""

from __future__ import annotations

import argparse
import pathlib

import keras
import numpy as np
from PIL import Image, ImageFilter

from training import data, metrics
from training.reports import write_report
from webapp.inference.model_card import GATE_SECTION, read_card
from webapp.inference.preprocess import preprocess

SIDE = 224  # the Kermany films' side here


def _stretch(factor_x: float, factor_y: float):
    def apply(image: Image.Image) -> Image.Image:
        w, h = round(SIDE * factor_x), round(SIDE * factor_y)
        image = image.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - SIDE) // 2, (h - SIDE) // 2
        return image.crop((left, top, left + SIDE, top + SIDE))

    return apply


def _resample(scale: float):
    def apply(image: Image.Image) -> Image.Image:
        small = image.resize((round(SIDE * scale),) * 2, Image.Resampling.BILINEAR)
        return small.resize((SIDE, SIDE), Image.Resampling.BILINEAR)

    return apply


# Each a change that a scanner, a PACS export or another original aspect ratio could make.
DISTORTIONS = {
    "none": lambda image: image,
    "gaussian blur 1.0 px": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
    "gaussian blur 1.5 px": lambda image: image.filter(ImageFilter.GaussianBlur(1.5)),
    "resolution x0.35": _resample(0.35),
    "wider by 20%": _stretch(1.2, 1.0),
    "taller by 20%": _stretch(1.0, 1.2),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=pathlib.Path, default=pathlib.Path("webapp/weights/cxr_pneumonia.keras"))
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--out", type=pathlib.Path, default=None, help="also write the table as JSON here")
    return p.parse_args(argv)


def stress(model_path: pathlib.Path, data_dir: pathlib.Path) -> dict:
    card = read_card(model_path)
    settings = card["training"]["settings"]
    size, threshold, temperature = card["input"]["size"], card["threshold"], card["temperature"]
    unknown = card["unknown"]
    gate = card.get(GATE_SECTION)
    films = data.read_films(data_dir, "train")
    _, val = data.split_by_patient(films, settings["val_fraction"], settings["split_seed"])
    labels = np.array([f.label for f in val])
    originals = [Image.fromarray(np.rint(data.decode_file(f.path, SIDE).pixels * 255).astype(np.uint8)) for f in val]
    model = keras.saving.load_model(model_path, compile=False)
    rows = {}
    for name, distort in DISTORTIONS.items():
        x = np.stack([preprocess(np.asarray(distort(im), np.float32) / 255.0, size) for im in originals])
        logits, whitened, *adult = model.predict(x, batch_size=128, verbose=0)
        probs = metrics.sigmoid(logits[:, 0] / temperature)
        s = metrics.summary(labels, probs, threshold)
        rows[name] = {k: s[k] for k in ("auc", "sensitivity", "specificity", "ece")}
        # Films the model itself would call "not a chest radiograph" (chest head or feature distance).
        not_chest = (metrics.sigmoid(logits[:, 1]) < unknown["min_chest_probability"]) | (
            np.mean(np.square(whitened), axis=-1) > unknown["max_feature_distance"]
        )
        rows[name]["not_chest_rate"] = float(not_chest.mean())
        # Films the intended-use gate would call an adult's (models with a gate only).
        called_adult = ""
        if gate is not None and adult:
            rate = float((metrics.sigmoid(adult[0][:, 0]) > gate["max_adult_probability"]).mean())
            rows[name]["called_adult_rate"] = rate
            called_adult = f"  called adult {rate:.1%}"
        print(
            f"{name:22s} AUC {s['auc']:.4f}  sens {s['sensitivity']:.3f}  spec {s['specificity']:.3f}  "
            f"ECE {s['ece']:.3f}  called not-chest {not_chest.mean():.1%}{called_adult}",
            flush=True,
        )
    return {"model_version": card["version"], "validation_films": int(labels.size), "rows": rows}


def main(argv=None) -> int:
    args = parse_args(argv)
    report = stress(args.model, args.data_dir)
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
