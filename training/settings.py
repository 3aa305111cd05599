"""The run settings shared by `training.train` and `training.ensemble`: one parser, one set of defaults."""

from __future__ import annotations

import argparse
import pathlib

from training import augment as aug
from training import data


def add_schedule_options(p: argparse.ArgumentParser, *, epochs: int, lr: float, weight_decay: float) -> None:
    """How long and how fast a training run goes (the pneumonia model's and the gate's): epochs of
    --steps-per-epoch batches of --batch films, AdamW at --lr with --weight-decay."""
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=weight_decay)


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--not-cxr-dir", type=pathlib.Path, default=None, help="default: DATA_DIR/../not_cxr")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("webapp/weights"))
    p.add_argument("--size", type=int, default=128, help="model input side in pixels")
    p.add_argument("--widths", default="24,48,96,192", help="filters per stage")
    p.add_argument("--dropout", type=float, default=0.3)
    add_schedule_options(p, epochs=12, lr=2e-3, weight_decay=2e-2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0 = off)")
    p.add_argument(
        "--aspect-range",
        type=float,
        default=aug.ASPECT_RANGE,
        help="half-width of the log aspect-ratio stretch in training augmentation",
    )
    p.add_argument("--shift-strength", type=float, default=1.6, help="strength of the shifted validation copy")
    p.add_argument("--negative-share", type=float, default=0.25, help="share of not-chest images per batch")
    p.add_argument("--chest-weight", type=float, default=0.5, help="weight of the chest_xray head loss")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--min-sensitivity", type=float, default=0.97, help="screening target on validation")
    p.add_argument("--seed", type=int, default=42, help="seed of initialisation, sampling and augmentation")
    p.add_argument(
        "--split-seed", type=int, default=42, help="seed of the patient split (fixed across ensemble members)"
    )
    p.add_argument("--version", default=None, help="model version (default: date and seed)")
    p.add_argument("--quick", action="store_true", help="a few dozen images and one short epoch (CI)")
    p.add_argument(
        "--weights-from",
        type=pathlib.Path,
        default=None,
        help="skip training: take the weights (and history) of an earlier run's .keras, then "
        "fit the feature distance, calibrate and export as usual",
    )
    return p.parse_args(argv)


def widths(args) -> tuple[int, ...]:
    return tuple(int(w) for w in args.widths.split(","))
