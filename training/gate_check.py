"""Check a trained intended-use gate: what it refuses, what it lets through, what it looks at.

    python -m training.gate_check --gate training/runs/gate/gate.keras --out reports/gate_check.json \
        --heatmaps docs/images/gate_heatmaps.png

- Children: the validation children's films (never trained on) under every fixed stress of
  `training.distort.STRESSES`; the share the gate refuses under each.
- Adults: the held-out patients of the sources the gate was trained on, and every film of a
  source it never saw (leave-one-source-out); per source, per source and true label, and per age
  band, the share refused, the share answered with a wrong NORMAL/PNEUMONIA label, and COVID-19
  films called NORMAL.
  Answers go through the served model and `webapp.inference.decide` exactly as served, with
  this gate's score and cut-off.
- Heat maps: Grad-CAM of the gate's "adult" logit on its last convolution, adults and children.

Validation and adult_cxr only: nothing here reads chest_xray/test.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import pathlib

import keras
import numpy as np
import tensorflow as tf

from training import data, distort, gate
from training.reports import write_report
from webapp.inference.analyzer import Analyzer
from webapp.inference.decide import decide
from webapp.inference.intended_use import IntendedUse
from webapp.inference.labels import CLASSES, NORMAL, UNKNOWN
from webapp.inference.preprocess import preprocess

AGE_BANDS = ((18, 30), (30, 50), (50, 65), (65, 200))


def age_band(age: float | None) -> str:
    if age is None:
        return "not given"
    for low, high in AGE_BANDS:
        if low <= age < high:
            return f"{low}-{high - 1}" if high < 200 else f"{low}+"
    return "under 18"


def source_and_truth(row: dict) -> str:
    """A film's source and true label as one group's name, e.g. "nih_cxr14 NORMAL"."""
    return f"{row['film'].source_id} {CLASSES[row['film'].label]}"


def intended_use_for(cutoff: float) -> IntendedUse:
    return IntendedUse(
        max_adult_probability=cutoff,
        adult_from_years=gate.ADULT_FROM_YEARS,
        validated_from_years=gate.VALIDATED_AGE_YEARS["from"],
        validated_below_years=gate.VALIDATED_AGE_YEARS["below"],
        version=gate.GATE_VERSION,
    )


def children_under_stress(gate_model, cutoff: float, val_pixels: list[np.ndarray], size: int) -> dict:
    rows = {}
    for name, change in distort.STRESSES.items():
        x = np.stack([preprocess(change(p.astype(np.float32) / 255.0, i), size) for i, p in enumerate(val_pixels)])
        p_adult = gate.adult_probability(gate_model, x)
        rows[name] = {"refused": float((p_adult > cutoff).mean()), "median_p_adult": float(np.median(p_adult))}
        print(f"children, {name:45s} refused {rows[name]['refused']:.1%}", flush=True)
    return rows


def adult_answers(base: Analyzer, gate_model, cutoff: float, films: list[gate.AdultFilm]) -> list[dict]:
    """Every film through the served model and decide(), with this gate."""
    policy = intended_use_for(cutoff)
    images = [data.decode_file(film.path, base.input_size) for film in films]
    p_adults = gate.adult_probability(gate_model, np.stack([preprocess(i.pixels, base.input_size) for i in images]))
    out = []
    for film, image, p_adult in zip(films, images, p_adults.tolist()):
        analysis = base.analyze(image)
        label, reason = decide(
            image,
            analysis.probabilities["PNEUMONIA"],
            analysis.chest_probability,
            analysis.feature_distance,
            base.threshold,
            base.params.policy,
            p_adult,
            policy,
        )
        out.append({"film": film, "label": label, "reason": reason, "p_adult": p_adult, "base_label": analysis.label})
    return out


def adult_summary(rows: list[dict]) -> dict:
    n = len(rows)
    if not n:
        return {"n": 0}
    truth = np.array([CLASSES[r["film"].label] for r in rows])
    labels = np.array([r["label"] for r in rows])
    answered = labels != UNKNOWN
    wrong = answered & (labels != truth)
    base = np.array([r["base_label"] for r in rows])
    base_wrong = (base != UNKNOWN) & (base != truth)
    unknown_reasons = [r["reason"] for r in rows if r["label"] == UNKNOWN]
    covid = np.array([r["film"].source_id == "mhh_covid19" for r in rows])
    return {
        "n": n,
        "refused_by_gate": float(np.mean([(r["reason"] or "").startswith("Outside the intended use") for r in rows])),
        "unknown": float((~answered).mean()),
        "wrong_label": float(wrong.mean()),
        "wrong_label_without_gate": float(base_wrong.mean()),
        "covid_called_normal": float((labels[covid] == NORMAL).mean()) if covid.any() else None,
        "covid_called_normal_without_gate": float((base[covid] == NORMAL).mean()) if covid.any() else None,
        "unknown_reasons_naming_intended_use": (
            float(np.mean([("intended use" in r) or ("adult" in r) for r in unknown_reasons]))
            if unknown_reasons
            else None
        ),
    }


def grouped(rows: list[dict], key) -> dict:
    groups = collections.defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return {k: adult_summary(v) for k, v in sorted(groups.items())}


def gradcam(gate_model, x: np.ndarray) -> np.ndarray:
    """Grad-CAM of the adult logit on the gate's last convolution, scaled to [0, 1] per image."""
    probe = keras.Model(gate_model.input, [gate_model.get_layer(gate.GATE_CAM_LAYER).output, gate_model.output])
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        maps, logit = probe(x, training=False)
        target = tf.reduce_sum(logit)
    weights = tf.reduce_mean(tape.gradient(target, maps), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy()
    return cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-9)


def save_heatmaps(gate_model, panels: list[tuple[str, np.ndarray]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    x = np.stack([p for _, p in panels])
    cams = gradcam(gate_model, x)
    p_adult = gate.adult_probability(gate_model, x)
    cols = len(panels) // 2
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 5.0))
    for ax, (title, image), cam, p in zip(axes.ravel(), panels, cams, p_adult):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(f"{title}\nP(adult) {p:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(
        "Intended-use gate: Grad-CAM of the 'adult' score (top: adults held out, bottom: validation children)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gate", type=pathlib.Path, required=True, help="a gate.keras with its gate_card.json beside it")
    p.add_argument(
        "--served",
        type=pathlib.Path,
        default=pathlib.Path("webapp/weights/cxr_pneumonia.keras"),
        help="the pneumonia model whose answers the gate guards",
    )
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--adult-dir", type=pathlib.Path, default=gate.DEFAULT_ADULT_DIR)
    p.add_argument("--out", type=pathlib.Path, default=None, help="write the figures as JSON here")
    p.add_argument("--heatmaps", type=pathlib.Path, default=None, help="write the Grad-CAM figure (PNG) here")
    p.add_argument("--skip-stress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    card = json.loads((args.gate.parent / gate.GATE_CARD_NAME).read_text())
    cutoff = float(card["max_adult_probability"])
    trained_on = set(card["adult_sources"])
    gate_model = keras.saving.load_model(args.gate, compile=False)
    base = Analyzer(args.served)
    # Answers without the served model's own gate; the gate under test is applied in adult_answers().
    base.params = dataclasses.replace(base.params, intended_use=None)
    size = base.input_size

    _, val_children = gate.children_split(args.data_dir)
    val_pixels = gate.load_pixels_u8([f.path for f in val_children], size)
    report = {
        "gate": str(args.gate),
        "gate_version": card["version"],
        "cutoff": cutoff,
        "trained_on": sorted(trained_on),
        "validation_children": len(val_pixels),
    }
    if not args.skip_stress:
        report["children_stress"] = children_under_stress(gate_model, cutoff, val_pixels, size)
        report["children_max_refused_under_any_stress"] = max(r["refused"] for r in report["children_stress"].values())

    adults = gate.read_adults(args.adult_dir)
    _, held = gate.split_adults(adults)
    held_ids = {f.path for f in held}
    # Films the gate never saw: held-out patients of its sources, every film of other sources.
    unseen = [f for f in adults if f.path in held_ids or f.source_id not in trained_on]
    rows = adult_answers(base, gate_model, cutoff, unseen)
    report["adults"] = {
        "held_out_patients_of_training_sources": adult_summary([r for r in rows if r["film"].source_id in trained_on]),
        "sources_never_seen": grouped(
            [r for r in rows if r["film"].source_id not in trained_on], lambda r: r["film"].source_id
        ),
        "by_source": grouped(rows, lambda r: r["film"].source_id),
        "by_age_band": grouped(rows, lambda r: age_band(r["film"].age)),
        # Which of a source's films the gate lets through: its normal films or its pneumonia films.
        "by_source_and_truth": grouped(rows, source_and_truth),
        "all_unseen": adult_summary(rows),
    }
    print(json.dumps(report["adults"]["by_source"], indent=1), flush=True)
    print(json.dumps(report["adults"]["all_unseen"], indent=1), flush=True)
    if args.heatmaps:
        picks = [r for r in rows if r["film"].source_id == "nih_cxr14"][:3] + [
            r for r in rows if r["film"].source_id == "mhh_covid19"
        ][:2]
        panels = [
            (
                f"{r['film'].source_id} {age_band(r['film'].age)}",
                preprocess(data.decode_file(r["film"].path, size).pixels, size),
            )
            for r in picks
        ]
        children = list(zip(val_children, val_pixels))[::160][:5]
        panels += [
            (f"child, {('normal', 'pneumonia')[f.label]}", preprocess(p.astype(np.float32) / 255.0, size))
            for f, p in children
        ]
        save_heatmaps(gate_model, panels, args.heatmaps)
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
