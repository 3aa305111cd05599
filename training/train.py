"""Train the chest X-ray model end to end: data, model, train, calibrate, export.

    python -m training.train                      # full run, writes webapp/weights/
    python -m training.train --quick --out /tmp/m # CI smoke run: a few dozen images, one epoch

Reads top to bottom: arguments, data, model, training loop, calibration on validation only,
export of the .keras file (no optimizer state) and its model card.
"""

from __future__ import annotations

import json
import shlex
import sys
import time

import keras
import tensorflow as tf

from training import augment as aug
from training import metrics, ood
from training.calibration import calibrate_and_export, logits_of, outputs_of
from training.model import build_model
from training.sets import TrainingSets, load_training_sets
from training.settings import parse_args, widths
from webapp.inference.model_card import read_card


# ---------------------------------------------------------------- data
def training_dataset(sets: TrainingSets, args) -> tf.data.Dataset:
    """Balanced batches: NORMAL, PNEUMONIA and not-chest examples drawn at fixed shares."""

    def source(images, target, seed):
        target = tf.constant(target, tf.float32)
        ds = tf.data.Dataset.from_tensor_slices(images)
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.map(lambda x: (x, target))

    # Target columns: pneumonia label, is-chest label, weight of the pneumonia loss.
    sources = [
        source(sets.x_train[sets.y_train == 0], [0.0, 1.0, 1.0], args.seed + 1),
        source(sets.x_train[sets.y_train == 1], [1.0, 1.0, 1.0], args.seed + 2),
        source(sets.x_neg, [0.0, 0.0, 0.0], args.seed + 3),
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
class ValidationMonitor(keras.callbacks.Callback):
    """Scores validation, its shifted copy and the held-out not-chest sources after every
    epoch, and keeps the weights of the best epoch by shifted-validation AUC."""

    def __init__(self, sets: TrainingSets, x_val_shifted):
        super().__init__()
        self.sets, self.x_val_shifted = sets, x_val_shifted
        self.history: list[dict] = []
        self.best, self.best_weights = -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        y = self.sets.y_val
        val = logits_of(self.model, self.sets.x_val)
        shifted = logits_of(self.model, self.x_val_shifted)
        other = logits_of(self.model, self.sets.x_other_val)
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


# ---------------------------------------------------------------- finish: feature distance, then calibrate and export
def with_distance(model: keras.Model, sets: TrainingSets, args) -> keras.Model:
    """An uncompiled copy of the trained network (no optimizer state) plus the feature-distance
    output, fitted on the training films without augmentation."""
    clean = build_model(args.size, widths(args), args.dropout)
    for layer in clean.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    features = outputs_of(ood.feature_model(clean), sets.x_train)[0]
    return ood.with_feature_distance(clean, *ood.fit_whitening(features))


def main(argv=None) -> int:
    args = parse_args(argv, description=__doc__)
    if args.quick:
        args.epochs, args.steps_per_epoch, args.batch = 1, 3, 16
    command = "python -m training.train " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    started = time.time()

    sets = load_training_sets(args)
    print(json.dumps(sets.summary), flush=True)
    x_val_shifted = aug.shifted_copy(sets.x_val, args.seed + 5, args.shift_strength)

    if args.weights_from:
        model = keras.saving.load_model(args.weights_from, compile=False)
        source = read_card(args.weights_from, verify=False)["training"]
        history = source["history"]
        # Training is deterministic, so the run that made these weights is the reproducing command.
        command = f"{source['command']}  # then re-exported with: {command}"
    else:
        total_steps = args.epochs * args.steps_per_epoch
        model = compile_model(args, total_steps)
        monitor = ValidationMonitor(sets, x_val_shifted)
        model.fit(
            training_dataset(sets, args),
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            callbacks=[monitor],
            verbose=2,
        )
        model.set_weights(monitor.best_weights)
        history = monitor.history

    model = with_distance(model, sets, args)
    calibrate_and_export(model, sets, x_val_shifted, args, history, command, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
