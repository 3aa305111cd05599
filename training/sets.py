"""The arrays one training run works on: films split by patient, negatives, and their summary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training import data, negatives


@dataclass(frozen=True)
class TrainingSets:
    x_train: np.ndarray  # preprocessed training films, (N, S, S, 1)
    y_train: np.ndarray  # 0 NORMAL, 1 PNEUMONIA
    x_val: np.ndarray  # validation films (other patients)
    y_val: np.ndarray
    x_neg: np.ndarray  # not-chest training examples, real and synthetic
    x_other_val: np.ndarray  # held-out not-chest sources
    summary: dict  # counts and split description for the model card


def load_training_sets(args) -> TrainingSets:
    """Training and validation films (split by patient), synthetic and real negatives, and a summary."""
    films = data.read_films(args.data_dir, "train")
    train_films, val_films = data.split_by_patient(films, args.val_fraction, args.split_seed)
    other = data.read_not_chest(args.not_cxr_dir or args.data_dir.parent / "not_cxr")
    other_train, other_val = data.split_not_chest(other)
    cache = not args.quick
    if args.quick:
        rng = np.random.default_rng(args.seed)

        def pick(items, n):
            return [items[i] for i in sorted(rng.choice(len(items), min(n, len(items)), replace=False))]

        train_films = pick([f for f in train_films if f.label == 0], 16) + pick(
            [f for f in train_films if f.label == 1], 16
        )
        val_films = pick([f for f in val_films if f.label == 0], 8) + pick([f for f in val_films if f.label == 1], 8)
        other_train, other_val = pick(other_train, 12), pick(other_val, 8)
    size = args.size
    x_train = data.load_inputs([f.path for f in train_films], size, cache)
    y_train = np.array([f.label for f in train_films])
    x_val = data.load_inputs([f.path for f in val_films], size, cache)
    y_val = np.array([f.label for f in val_films])
    x_other_val = data.load_inputs([i.path for i in other_val], size, cache)
    x_neg = negatives.build_negatives(
        data.load_pixels([i.path for i in other_train], size),
        data.load_pixels([f.path for f in train_films], size),
        size,
        args.seed,
        chest_variants=8 if args.quick else 600,
        render_count=8 if args.quick else 300,
    )
    summary = {
        "train_films": {
            "NORMAL": int((y_train == 0).sum()),
            "PNEUMONIA": int((y_train == 1).sum()),
            "patients": len({f.patient for f in train_films}),
        },
        "validation_films": {
            "NORMAL": int((y_val == 0).sum()),
            "PNEUMONIA": int((y_val == 1).sum()),
            "patients": len({f.patient for f in val_films}),
        },
        "not_chest_train_sources": sorted({i.source_id for i in other_train}),
        "not_chest_validation_sources": sorted({i.source_id for i in other_val}),
        "not_chest_train_examples_with_synthetic": int(len(x_neg)),
        "validation_split": f"{args.val_fraction:.0%} of train/ patients, stratified by label, seed {args.split_seed}",
    }
    return TrainingSets(x_train, y_train, x_val, y_val, x_neg, x_other_val, summary)
