"""Unit tests of the training package: the patient split, metrics, calibration helpers,
augmentation determinism and the synthetic negatives."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from training import data, metrics, negatives, style_mix


def _films(n_patients: int, images_each: int, label: int, prefix: str):
    return [
        data.Film(pathlib.Path(f"{prefix}{p}-{i}.jpeg"), label, f"{prefix}{p}", "")
        for p in range(n_patients)
        for i in range(images_each)
    ]


def test_split_keeps_each_patient_on_one_side_and_is_stratified():
    films = _films(100, 3, 0, "IM-") + _films(300, 2, 1, "person")
    train, val = data.split_by_patient(films, 0.2, seed=7)
    assert not {f.patient for f in train} & {f.patient for f in val}
    assert len(train) + len(val) == len(films)
    val_patients = {(f.patient, f.label) for f in val}
    assert sum(1 for _, lab in val_patients if lab == 0) == 20
    assert sum(1 for _, lab in val_patients if lab == 1) == 60
    assert data.split_by_patient(films, 0.2, seed=7) == (train, val)


def test_held_out_not_chest_sources_never_reach_training():
    items = [data.NotChest(pathlib.Path(f"{s}.jpg"), "k", s) for s in ("knee_kl", "hand_rsna_boneage", "bsd68", "busi")]
    train, val = data.split_not_chest(items)
    assert {i.source_id for i in val} == {"hand_rsna_boneage", "bsd68"}
    assert {i.source_id for i in train} == {"knee_kl", "busi"}


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + labels * 0.3, 1)  # many ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert metrics.roc_auc(labels, scores) == pytest.approx(pairwise)


def test_operating_point_counts():
    out = metrics.at_threshold([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.7, 0.9], 0.5)
    assert out["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(0.5)


def test_calibration_error_is_zero_for_calibrated_scores_and_large_for_overconfident():
    rng = np.random.default_rng(1)
    probs = rng.random(20000)
    labels = rng.random(20000) < probs
    assert metrics.expected_calibration_error(labels, probs) < 0.02
    assert metrics.expected_calibration_error(labels, (probs > 0.5).astype(float)) > 0.2


def test_temperature_fit_recovers_the_true_temperature():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0, 2, 20000)
    labels = rng.random(20000) < metrics.sigmoid(true_logits)
    assert metrics.fit_temperature(labels, true_logits * 3.0) == pytest.approx(3.0, rel=0.05)


def test_screening_threshold_reaches_the_target_sensitivity():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    probs = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0, 1)
    threshold = metrics.screening_threshold(labels, probs, 0.95)
    assert metrics.at_threshold(labels, probs, threshold)["sensitivity"] >= 0.95
    assert metrics.at_threshold(labels, probs, threshold + 1e-3)["sensitivity"] < 0.95


def test_augmentation_is_reproducible_and_stays_in_range():
    tf = pytest.importorskip("tensorflow")
    from training.augment import augment

    image = tf.constant(np.random.default_rng(4).random((64, 64, 1)), tf.float32)
    seed = tf.constant([11, 12], tf.int64)
    first, again = augment(image, seed, 1.0).numpy(), augment(image, seed, 1.0).numpy()
    other = augment(image, tf.constant([11, 13], tf.int64), 1.0).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (64, 64, 1) and first.min() >= 0.0 and first.max() <= 1.0


def test_geometric_augmentation_stretches_one_axis_against_the_other():
    """Width over height of a centred square must vary across seeds (the films were squashed
    to a square from many aspect ratios), within the configured range."""
    tf = pytest.importorskip("tensorflow")
    from training.augment import ASPECT_RANGE, _affine

    image = np.zeros((96, 96, 1), np.float32)
    image[32:64, 32:64] = 1.0
    ratios = []
    for k in range(40):
        out = _affine(tf.constant(image), tf.constant([5, k], tf.int64), 1.0, ASPECT_RANGE).numpy()[..., 0] > 0.5
        rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
        ratios.append((np.ptp(cols) + 1) / (np.ptp(rows) + 1))
    # Rotations of up to 10 degrees widen both sides a little; the stretch dominates.
    assert min(ratios) < 0.9 and max(ratios) > 1.1
    assert np.exp(-ASPECT_RANGE) * 0.8 < min(ratios) and max(ratios) < np.exp(ASPECT_RANGE) * 1.25


def test_synthetic_negatives_are_reproducible_model_inputs():
    rng = np.random.default_rng(5)
    others = [rng.random((50, 70)).astype(np.float32) for _ in range(3)]
    films = [rng.random((64, 64)).astype(np.float32) for _ in range(8)]
    a = negatives.build_negatives(others, films, 32, seed=9, per_image=2, chest_variants=4, render_count=4)
    b = negatives.build_negatives(others, films, 32, seed=9, per_image=2, chest_variants=4, render_count=4)
    assert a.shape == (3 + 6 + 4 + 4, 32, 32, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_amplitude_mix_keeps_each_films_structure_and_takes_its_partners_texture():
    from webapp.inference.preprocess import equalise

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = ((xx - 32) ** 2 + (yy - 32) ** 2 < 20**2).astype(np.float32) * 0.8 + 0.1  # a disc
    grainy = np.clip(0.5 + rng.normal(0, 0.2, (64, 64)), 0, 1).astype(np.float32)  # fine texture only
    batch = np.stack([equalise(smooth), equalise(grainy)])[..., None]

    rng = np.random.default_rng(0)
    untouched = style_mix.amplitude_mix(batch, rng, share=0.0)
    np.testing.assert_array_equal(untouched, batch)  # nothing chosen: the films as they were
    assert rng.random() == np.random.default_rng(0).random()  # and no draw taken from the run's stream

    mixed = style_mix.amplitude_mix(batch, np.random.default_rng(0), share=1.0, strength=1.0)
    again = style_mix.amplitude_mix(batch, np.random.default_rng(0), share=1.0, strength=1.0)
    np.testing.assert_array_equal(mixed, again)
    assert mixed.shape == batch.shape and mixed.dtype == np.float32 and mixed.min() >= 0 and mixed.max() <= 1
    disc = mixed[0, ..., 0]
    inside = (xx - 32) ** 2 + (yy - 32) ** 2 < 15**2
    assert disc[inside].mean() > disc[~inside].mean() + 0.2  # the disc is still where it was

    def roughness(film):  # mean absolute difference between neighbours: high-frequency energy
        return float(np.abs(np.diff(film, axis=1)).mean())

    assert roughness(disc) > 2 * roughness(batch[0, ..., 0])  # and took on texture it never had


def test_stress_distortions_keep_the_film_size_and_do_what_they_say():
    from PIL import Image

    from training.stress import DISTORTIONS, SIDE

    square = np.zeros((SIDE, SIDE), np.uint8)
    square[72:152, 72:152] = 255
    image = Image.fromarray(square)

    def extent(distorted, axis):
        mask = np.asarray(distorted) > 127
        return np.flatnonzero(mask.any(axis=axis)).size

    for name, distort in DISTORTIONS.items():
        assert distort(image).size == (SIDE, SIDE), name
    wider, taller = DISTORTIONS["wider by 20%"](image), DISTORTIONS["taller by 20%"](image)
    assert extent(wider, 0) == pytest.approx(96, abs=2) and extent(wider, 1) == pytest.approx(80, abs=2)
    assert extent(taller, 1) == pytest.approx(96, abs=2) and extent(taller, 0) == pytest.approx(80, abs=2)
    for name in ("gaussian blur 1.5 px", "resolution x0.35"):  # soft edges: grey levels between
        values = np.asarray(DISTORTIONS[name](image))
        assert ((values > 10) & (values < 245)).sum() > 100, name
    assert set(np.unique(np.asarray(DISTORTIONS["none"](image)))) == {0, 255}


def test_reports_are_indented_json_with_a_final_newline_in_a_folder_made_for_them(tmp_path):
    from training.reports import write_report

    path = tmp_path / "runs" / "stress" / "report.json"
    write_report(path, {"rows": [{"auc": 0.9}], "model_version": "v1"})
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "rows"')
    assert json.loads(text) == {"rows": [{"auc": 0.9}], "model_version": "v1"}


def test_the_gate_check_counts_refusals_and_wrong_labels_per_source_and_true_label():
    from training.gate import AdultFilm
    from training.gate_check import grouped, source_and_truth

    adult = "Outside the intended use: this looks like an adult's chest film; ..."

    def row(source, truth, label, reason=None, base_label=None):
        film = AdultFilm(pathlib.Path(f"{source}.jpg"), truth, "p1", source_id=source, age=40.0)
        return {"film": film, "label": label, "reason": reason, "base_label": base_label or label}

    rows = [
        row("nih_cxr14", 0, "UNKNOWN", adult, base_label="PNEUMONIA"),  # refused: its error averted
        row("nih_cxr14", 0, "PNEUMONIA"),  # let through and wrong
        row("nih_cxr14", 1, "PNEUMONIA"),  # let through and right
        row("nih_cxr14", 1, "UNKNOWN", "Too close to the threshold to call.", base_label="NORMAL"),
    ]
    groups = grouped(rows, source_and_truth)
    assert list(groups) == ["nih_cxr14 NORMAL", "nih_cxr14 PNEUMONIA"]
    normal, pneumonia = groups["nih_cxr14 NORMAL"], groups["nih_cxr14 PNEUMONIA"]
    assert (normal["n"], normal["refused_by_gate"], normal["wrong_label"]) == (2, 0.5, 0.5)
    assert normal["wrong_label_without_gate"] == 1.0
    assert (pneumonia["refused_by_gate"], pneumonia["unknown"], pneumonia["wrong_label"]) == (0.0, 0.5, 0.0)
    assert pneumonia["wrong_label_without_gate"] == 0.5 and pneumonia["covid_called_normal"] is None
    assert normal["unknown_reasons_naming_intended_use"] == 1.0
    assert pneumonia["unknown_reasons_naming_intended_use"] == 0.0


@pytest.mark.parametrize("argv", [["--refit"], ["--refit", "/nonexistent/gate", "--epochs", "3"]])
def test_gate_refit_without_a_folder_or_with_other_options_is_a_usage_error(argv, capsys):
    # `python -m training.gate --refit` read argv[1] and died with IndexError; options after the folder
    # were silently ignored. Either is now argparse's usage error (exit 2), before anything is loaded.
    from training.gate import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: python -m training.gate --refit" in capsys.readouterr().err


def test_the_ensembles_help_names_the_train_options_it_passes_on(capsys):
    # docs/model.md runs `training.ensemble --members ... --out webapp/weights --version ...`; its --help
    # listed --members alone, so neither --out (whose default is the shipped model's folder) nor --version
    # could be found there.
    from training.ensemble import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "python -m training.train" in text and "--out" in text and "--version" in text
