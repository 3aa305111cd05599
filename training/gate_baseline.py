"""The alternative the gate was measured against: a logistic head on the pneumonia model's own
pooled features (no new network, no extra cost), trained on the same children and adults.

    python -m training.gate_baseline --out reports/gate_baseline.json

Same splits, same kind of training films (each once clean and once through
`training.distort.random_distortion`), same cut-off rule (99.8% quantile of validation children,
clean plus a distorted copy), same checks: children's validation films under every fixed stress,
held-out adult patients, and the leave-one-source-out pairs. Validation and adult_cxr only.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import keras
import numpy as np

from training import data, distort, gate, metrics, ood
from training.reports import write_report
from webapp.inference.preprocess import preprocess


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 3000, lr: float = 0.5):
    """Standardised features -> (mean, scale, weights, bias) by plain gradient descent."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    w, b = np.zeros(z.shape[1]), 0.0
    balance = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # both classes weigh the same
    for _ in range(steps):
        p = metrics.sigmoid(z @ w + b)
        grad = (p - y) * balance
        w -= lr * (z.T @ grad / len(y) + l2 * w)
        b -= lr * grad.mean()
    return mean, scale, w, b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--served", type=pathlib.Path, default=pathlib.Path("webapp/weights/cxr_pneumonia.keras"))
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    size, rng = 128, np.random.default_rng(42)
    features_of = ood.feature_model(keras.saving.load_model(args.served, compile=False))

    def features(x):
        return np.concatenate([features_of(x[i : i + 256], training=False).numpy() for i in range(0, len(x), 256)])

    train_children, val_children = gate.children_split(data.DEFAULT_DATA_DIR)
    adults = gate.read_adults(gate.DEFAULT_ADULT_DIR)
    adult_train, adult_held = gate.split_adults(adults)
    children = gate.load_pixels_u8([f.path for f in train_children], size)
    f_children = np.r_[
        features(gate.clean_inputs(children, size)), features(gate.distorted_inputs(children, size, rng))
    ]
    val_pixels = gate.load_pixels_u8([f.path for f in val_children], size)
    f_val = np.r_[
        features(gate.clean_inputs(val_pixels, size)),
        features(gate.distorted_inputs(val_pixels, size, np.random.default_rng(49))),
    ]
    adult_pixels = {f.path: px for f, px in zip(adults, gate.load_pixels_u8([f.path for f in adults], size))}
    f_adults = {f.path: v for f, v in zip(adults, features(gate.clean_inputs(list(adult_pixels.values()), size)))}

    def scorer(sources):
        train = [f for f in adult_train if f.source_id in sources]
        pix = [adult_pixels[f.path] for f in train]
        f_a = np.r_[np.stack([f_adults[f.path] for f in train]), features(gate.distorted_inputs(pix, size, rng))]
        x = np.r_[f_children, f_a]
        y = np.r_[np.zeros(len(f_children)), np.ones(len(f_a))]
        mean, scale, w, b = fit_logistic(x, y)
        return lambda f: metrics.sigmoid(((f - mean) / scale) @ w + b)

    stressed_features = {
        stress: features(
            np.stack([preprocess(change(px.astype(np.float32) / 255.0, i), size) for i, px in enumerate(val_pixels)])
        )
        for stress, change in distort.STRESSES.items()
    }
    report = {}
    for name, sources in (
        ("both sources", gate.ADULT_SOURCES),
        ("NIH only", ("nih_cxr14",)),
        ("Hannover only", ("mhh_covid19",)),
    ):
        score = scorer(sources)
        cutoff = gate.fit_cutoff(score(f_val))
        unseen = [f for f in adults if f.source_id not in sources] or [f for f in adult_held if f.source_id in sources]
        held = [f for f in adult_held if f.source_id in sources]
        row = {
            "cutoff": cutoff,
            "held_out_adults_of_training_sources_refused": float(
                (score(np.stack([f_adults[f.path] for f in held])) > cutoff).mean()
            ),
            "adults_refused_other_source": float((score(np.stack([f_adults[f.path] for f in unseen])) > cutoff).mean())
            if len(sources) == 1
            else None,
        }
        stressed = {stress: float((score(f) > cutoff).mean()) for stress, f in stressed_features.items()}
        row["children_refused_by_stress"] = stressed
        row["children_max_refused_under_any_stress"] = max(stressed.values())
        report[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "children_refused_by_stress"}), flush=True)
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
