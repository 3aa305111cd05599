"""Train the chest X-ray model end to end: data, model, train, calibrate, export.

    python -m training.train                      # full run, writes webapp/weights/
    python -m training.train --quick --out /tmp/m # CI smoke run: a few dozen images, one epoch

Reads top to bottom: arguments, data, model, training loop, calibration on validation only,
export of the .keras file (no optimizer state) and its model card.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from training import augment as aug
from training import data, metrics, negatives, ood
from training.export import export
from training.model import GRADCAM_LAYER, OUTPUT_COLUMNS, build_model
from webapp.inference.model_card import ASPECT_RATIO_LIMITS, read_card


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--not-cxr-dir", type=pathlib.Path, default=None, help="default: DATA_DIR/../not_cxr")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("webapp/weights"))
    p.add_argument("--size", type=int, default=128, help="model input side in pixels")
    p.add_argument("--widths", default="24,48,96,192", help="filters per stage")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=2e-2)
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


# ---------------------------------------------------------------- data
def load_data(args):
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
    return dict(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_neg=x_neg,
        x_other_val=x_other_val,
        other_val=other_val,
        summary=summary,
    )


def training_dataset(d, args) -> tf.data.Dataset:
    """Balanced batches: NORMAL, PNEUMONIA and not-chest examples drawn at fixed shares."""

    def source(images, target, seed):
        target = tf.constant(target, tf.float32)
        ds = tf.data.Dataset.from_tensor_slices(images)
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.map(lambda x: (x, target))

    # Target columns: pneumonia label, is-chest label, weight of the pneumonia loss.
    sources = [
        source(d["x_train"][d["y_train"] == 0], [0.0, 1.0, 1.0], args.seed + 1),
        source(d["x_train"][d["y_train"] == 1], [1.0, 1.0, 1.0], args.seed + 2),
        source(d["x_neg"], [0.0, 0.0, 0.0], args.seed + 3),
    ]
    film_share = (1.0 - args.negative_share) / 2
    ds = tf.data.Dataset.sample_from_datasets(sources, [film_share, film_share, args.negative_share], seed=args.seed)
    if args.augment > 0:
        ds = tf.data.Dataset.zip((ds, aug.seeds_dataset(args.seed + 4)))
        ds = ds.map(
            lambda xy, s: (aug.augment(xy[0], s, args.augment, args.aspect_range), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.batch(args.batch).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- model
def multitask_loss(label_smoothing: float, chest_weight: float):
    def loss(y_true, logits):
        pneumonia = y_true[:, 0] * (1.0 - label_smoothing) + 0.5 * label_smoothing
        film_loss = tf.nn.sigmoid_cross_entropy_with_logits(pneumonia, logits[:, 0]) * y_true[:, 2]
        chest_loss = tf.nn.sigmoid_cross_entropy_with_logits(y_true[:, 1], logits[:, 1])
        return film_loss + chest_weight * chest_loss

    return loss


def widths(args) -> tuple[int, ...]:
    return tuple(int(w) for w in args.widths.split(","))


def compile_model(args, total_steps: int) -> keras.Model:
    model = build_model(args.size, widths(args), args.dropout)
    warmup = max(1, total_steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr * 0.1, total_steps - warmup, alpha=0.01, warmup_target=args.lr, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=multitask_loss(args.label_smoothing, args.chest_weight),
    )
    return model


# ---------------------------------------------------------------- train
def outputs_of(model, images, batch: int = 128) -> list[np.ndarray]:
    """Every output of the model for many images, batched, inference mode."""
    infer = tf.function(lambda x: model(x, training=False))
    chunks = [infer(images[i : i + batch]) for i in range(0, len(images), batch)]
    chunks = [c if isinstance(c, (list, tuple)) else [c] for c in chunks]
    if not chunks:
        return [np.zeros((0, len(OUTPUT_COLUMNS)), np.float32)]
    return [np.concatenate([c[k].numpy() for c in chunks]) for k in range(len(chunks[0]))]


def logits_of(model, images) -> np.ndarray:
    return outputs_of(model, images)[0]


class ValidationMonitor(keras.callbacks.Callback):
    """Scores validation, its shifted copy and the held-out not-chest sources after every
    epoch, and keeps the weights of the best epoch by shifted-validation AUC."""

    def __init__(self, d, x_val_shifted):
        super().__init__()
        self.d, self.x_val_shifted = d, x_val_shifted
        self.history: list[dict] = []
        self.best, self.best_weights = -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        y = self.d["y_val"]
        val = logits_of(self.model, self.d["x_val"])
        shifted = logits_of(self.model, self.x_val_shifted)
        other = logits_of(self.model, self.d["x_other_val"])
        row = {
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "val_auc": metrics.roc_auc(y, val[:, 0]),
            "val_shifted_auc": metrics.roc_auc(y, shifted[:, 0]),
            "val_nll": metrics.nll(y, metrics.sigmoid(val[:, 0])),
            "val_chest_recall": float((val[:, 1] > 0).mean()),
            "held_out_not_chest_rejected": float((other[:, 1] <= 0).mean()) if len(other) else None,
        }
        self.history.append(row)
        print(json.dumps(row), flush=True)
        score = row["val_shifted_auc"] + row["val_auc"]
        if score >= self.best:
            self.best, self.best_weights = score, self.model.get_weights()


# ---------------------------------------------------------------- calibrate
# ---------------------------------------------------------------- finish: feature distance, calibration
def with_distance(model: keras.Model, d, args) -> keras.Model:
    """An uncompiled copy of the trained network (no optimizer state) plus the feature-distance
    output, fitted on the training films without augmentation."""
    clean = build_model(args.size, widths(args), args.dropout)
    for layer in clean.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    features = outputs_of(ood.feature_model(clean), d["x_train"])[0]
    return ood.with_feature_distance(clean, *ood.fit_whitening(features))


def calibrate(model, d, x_val_shifted, args) -> dict:
    """Temperature, threshold and UNKNOWN parameters, from validation data only."""
    y = d["y_val"]
    (val, val_w), (shifted, shifted_w), (other, other_w) = (
        outputs_of(model, x) for x in (d["x_val"], x_val_shifted, d["x_other_val"])
    )
    val_d, shifted_d, other_d = ood.distances(val_w), ood.distances(shifted_w), ood.distances(other_w)
    # The patient split is nearly separable, so fitting on it alone would sharpen the scores;
    # fitting on the clean and shifted copies together stands in for an unseen hospital.
    both_y = np.r_[y, y]
    both_logits = np.r_[val[:, 0], shifted[:, 0]]
    temperature = metrics.fit_temperature(both_y, both_logits)
    probs = metrics.sigmoid(both_logits / temperature)
    threshold = metrics.screening_threshold(both_y, probs, args.min_sensitivity)
    # The smallest band that still keeps all but 1% of validation films answered.
    distance = np.sort(np.abs(probs - threshold))
    band = float(min(0.05, distance[int(0.01 * distance.size)]))
    # Chest-head cut-off: a low one, as long as at most 0.5% of validation films fall below it.
    chest = metrics.sigmoid(np.r_[val[:, 1], shifted[:, 1]])
    min_chest = float(min(0.5, np.quantile(chest, 0.005)))
    other_chest = metrics.sigmoid(other[:, 1])
    # Feature-distance cut-off: again at most 0.5% of validation films (clean and shifted) beyond it.
    max_distance = float(np.quantile(np.r_[val_d, shifted_d], 0.995))
    rejected = (other_chest < min_chest) | (other_d > max_distance)
    val_probs = metrics.sigmoid(val[:, 0] / temperature)
    shifted_probs = metrics.sigmoid(shifted[:, 0] / temperature)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "unknown": {
            "max_colourfulness": 0.03,
            "min_aspect_ratio": ASPECT_RATIO_LIMITS[0],
            "max_aspect_ratio": ASPECT_RATIO_LIMITS[1],
            "min_chest_probability": min_chest,
            "uncertainty_band": band,
            "max_feature_distance": max_distance,
        },
        "validation": {
            "films": metrics.summary(y, val_probs, threshold),
            "films_shifted": metrics.summary(y, shifted_probs, threshold),
            "films_in_uncertainty_band": float((np.abs(val_probs - threshold) < band).mean()),
            "films_below_chest_cutoff": float((metrics.sigmoid(val[:, 1]) < min_chest).mean()),
            "films_beyond_feature_distance": float((val_d > max_distance).mean()),
            "held_out_not_chest_rejected_by_chest_head": float((other_chest < min_chest).mean())
            if len(other)
            else None,
            "held_out_not_chest_rejected_by_feature_distance": float((other_d > max_distance).mean())
            if len(other)
            else None,
            "held_out_not_chest_rejected_by_model": float(rejected.mean()) if len(other) else None,
            "temperature_fitted_on": "validation films plus their shifted copy",
        },
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 1, 3, 16
    command = "python -m training.train " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    started = time.time()

    d = load_data(args)
    print(json.dumps(d["summary"]), flush=True)
    x_val_shifted = aug.shifted_copy(d["x_val"], args.seed + 5, args.shift_strength)

    if args.weights_from:
        model = keras.saving.load_model(args.weights_from, compile=False)
        source = read_card(args.weights_from, verify=False)["training"]
        history = source["history"]
        # Training is deterministic, so the run that made these weights is the reproducing command.
        command = f"{source['command']}  # then re-exported with: {command}"
    else:
        total_steps = args.epochs * args.steps_per_epoch
        model = compile_model(args, total_steps)
        monitor = ValidationMonitor(d, x_val_shifted)
        model.fit(
            training_dataset(d, args),
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            callbacks=[monitor],
            verbose=2,
        )
        model.set_weights(monitor.best_weights)
        history = monitor.history

    model = with_distance(model, d, args)
    calibration = calibrate(model, d, x_val_shifted, args)
    print(json.dumps(calibration["validation"]), flush=True)
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    export(
        model,
        args,
        calibration,
        d["summary"],
        history,
        settings,
        command,
        time.time() - started,
        gradcam_layer=GRADCAM_LAYER,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
