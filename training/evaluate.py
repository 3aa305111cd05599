"""Evaluate the shipped model on the official test set, the held-out not-chest sources and the
held-out adult patients of adult_cxr (outside the intended use), exactly as the web app serves
it: decode -> shared preprocessing -> Analyzer (threshold, temperature, UNKNOWN policy and the
intended-use gate from the model card).

    python -m training.evaluate                 # writes reports/metrics.json and the PNG plots
    python -m training.evaluate --check-bars    # also exits 1 if any bar (issue 3; issue 12 for adults) is missed
"""

from __future__ import annotations

import argparse
import collections
import csv
import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np

from training import data, gate, metrics, plots
from training.gate_check import age_band
from training.reports import write_report
from webapp.inference.analyzer import Analyzer
from webapp.inference.labels import NORMAL, UNKNOWN
from webapp.inference.model_card import read_card, write_card

DEFAULT_MODEL = pathlib.Path("webapp/weights/cxr_pneumonia.keras")
BARS = {  # issue 3, and issue 12 for the adults: (metric, comparison, bound)
    "accuracy": (">=", 0.90),
    "auc": (">=", 0.97),
    "sensitivity": (">=", 0.95),
    "specificity": (">=", 0.80),
    "ece": ("<=", 0.08),
    "test_unknown_rate": ("<=", 0.02),
    "held_out_not_chest_unknown_rate": (">=", 0.97),
    "adult_wrong_label_rate": ("<=", 0.05),
    "adult_covid_called_normal_rate": ("<=", 0.05),
    "adult_unknown_reasons_naming_intended_use": (">=", 0.80),
}
INTENDED_USE_WORDS = ("intended use", "adult")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    p.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DATA_DIR)
    p.add_argument("--not-cxr-dir", type=pathlib.Path, default=None, help="default: DATA_DIR/../not_cxr")
    p.add_argument("--adult-dir", type=pathlib.Path, default=None, help="default: DATA_DIR/../adult_cxr")
    p.add_argument("--reports", type=pathlib.Path, default=pathlib.Path("reports"))
    p.add_argument("--check-bars", action="store_true", help="exit 1 if any bar (issue 3, issue 12) is missed")
    p.add_argument("--update-card", action="store_true", help="store the test metrics in the model card")
    p.add_argument(
        "--check-card",
        action="store_true",
        help="exit 1 unless the test metrics reproduce those stored in the model card "
        "(catches training-serving skew and a model swapped without re-evaluation)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N files of each set (smoke runs)")
    return p.parse_args(argv)


def analyse_files(analyzer: Analyzer, paths: list[pathlib.Path]):
    results, seconds = [], []
    for path in paths:
        image = data.decode_file(path, analyzer.input_size)
        started = time.perf_counter()
        results.append(analyzer.analyze(image))
        seconds.append(time.perf_counter() - started)
    return results, seconds


def adult_figures(films: list[gate.AdultFilm], results) -> dict:
    """Answers on adult films: refused by the intended-use gate, UNKNOWN for any reason, answered
    with a wrong NORMAL/PNEUMONIA label, COVID-19 pneumonia called NORMAL."""
    labels = np.array([r.label for r in results])
    truth = np.array([("NORMAL", "PNEUMONIA")[f.label] for f in films])
    reasons = [r.unknown_reason or "" for r in results if r.label == UNKNOWN]
    covid = np.array([f.source_id == "mhh_covid19" for f in films])
    outside = [(r.unknown_reason or "").startswith("Outside the intended use") for r in results]
    return {
        "n": len(films),
        "refused_as_outside_intended_use": float(np.mean(outside)),
        "unknown_rate": float((labels == UNKNOWN).mean()),
        "wrong_label_rate": float(((labels != UNKNOWN) & (labels != truth)).mean()),
        "covid_called_normal_rate": float((labels[covid] == NORMAL).mean()) if covid.any() else None,
        "unknown_reasons_naming_intended_use": (
            float(np.mean([any(w in r for w in INTENDED_USE_WORDS) for r in reasons])) if reasons else None
        ),
    }


def evaluate_adults(analyzer: Analyzer, adult_dir: pathlib.Path, limit: int | None) -> dict:
    """The held-out adult patients of adult_cxr (the gate never trained on them), in total, per
    source and per age band (ages from the manifest; the Hannover source withholds them)."""
    _, held = gate.split_adults(gate.read_adults(adult_dir))
    held = held[:limit]
    results, _ = analyse_files(analyzer, [f.path for f in held])
    pairs = list(zip(held, results))

    def grouped(key) -> dict:
        groups = collections.defaultdict(list)
        for film, result in pairs:
            groups[key(film)].append((film, result))
        return {k: adult_figures([f for f, _ in v], [r for _, r in v]) for k, v in sorted(groups.items())}

    return {
        "films": "held-out patients of adult_cxr (20% of each source's patients, seed 42; never trained on)",
        "all": adult_figures(held, results),
        "by_source": grouped(lambda f: f.source_id),
        "by_age_band": grouped(lambda f: age_band(f.age)),
    }


@dataclass(frozen=True)
class Evaluation:
    report: dict  # every figure, as written to metrics.json
    labels: np.ndarray  # test-film truth, 0 NORMAL / 1 PNEUMONIA
    probs: np.ndarray  # calibrated P(pneumonia) per test film
    analyzer: Analyzer
    predictions: list[dict]  # one row per test film, as written to test_predictions.csv


def evaluate(args) -> Evaluation:
    analyzer = Analyzer(args.model)
    films = data.read_films(args.data_dir, "test")[: args.limit]
    others = data.read_not_chest(args.not_cxr_dir or args.data_dir.parent / "not_cxr")
    held_out = set(analyzer.card.get("data", {}).get("not_chest_validation_sources", data.HELD_OUT_SOURCES))
    by_source = collections.defaultdict(list)
    for item in others:
        by_source[item.source_id].append(item)

    film_results, seconds = analyse_files(analyzer, [f.path for f in films])
    labels = np.array([f.label for f in films])
    probs = np.array([r.probabilities["PNEUMONIA"] for r in film_results])
    test = metrics.summary(labels, probs, analyzer.threshold)
    unknown = np.array([r.label == UNKNOWN for r in film_results])
    test["unknown_rate"] = float(unknown.mean())
    answered = ~unknown
    test["answered"] = metrics.at_threshold(labels[answered], probs[answered], analyzer.threshold)
    test["answered"]["n"] = int(answered.sum())
    test["top_label_ece"] = metrics.expected_calibration_error((probs >= 0.5) == labels, np.maximum(probs, 1 - probs))
    test["unknown_reasons"] = dict(
        collections.Counter(r.unknown_reason.split(":")[0] for r in film_results if r.unknown_reason)
    )

    sources = {}
    for source_id, items in sorted(by_source.items()):
        results, _ = analyse_files(analyzer, [i.path for i in items[: args.limit]])
        sources[source_id] = {
            "n": len(results),
            "unknown_rate": float(np.mean([r.label == UNKNOWN for r in results])),
            "held_out": source_id in held_out,
            "kind": items[0].kind,
        }
    held = [s for s in sources.values() if s["held_out"]]
    held_rate = sum(s["unknown_rate"] * s["n"] for s in held) / max(sum(s["n"] for s in held), 1)
    test["refused_as_outside_intended_use"] = float(
        np.mean([(r.unknown_reason or "").startswith("Outside the intended use") for r in film_results])
    )
    adults = evaluate_adults(analyzer, args.adult_dir or args.data_dir.parent / "adult_cxr", args.limit)

    ms = np.array(seconds) * 1000
    report = {
        "model_version": analyzer.model_version,
        "model_sha256": analyzer.card.get("sha256"),
        "threshold": analyzer.threshold,
        "temperature": analyzer.temperature,
        "test": test,
        "not_chest_sources": sources,
        "held_out_not_chest_unknown_rate": held_rate,
        "adults_held_out": adults,
        "analyze_ms": {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))},
        "ece_definition": "15 equal-width bins of P(pneumonia), weighted by bin size",
        "notes": "All figures through webapp.inference.Analyzer with the card's threshold, temperature "
        "and UNKNOWN policy; accuracy/sensitivity/specificity count every test film at the threshold, "
        "'answered' excludes films answered UNKNOWN.",
    }
    report["bars"] = check_bars(report)
    predictions = [
        {
            "file": f.path.relative_to(args.data_dir).as_posix(),
            "truth": ("NORMAL", "PNEUMONIA")[f.label],
            "p_pneumonia": round(r.probabilities["PNEUMONIA"], 6),
            "answer": r.label,
            "chest_probability": round(r.chest_probability, 6),
            "feature_distance": round(r.feature_distance, 4),
            "adult_probability": None if r.adult_probability is None else round(r.adult_probability, 6),
        }
        for f, r in zip(films, film_results)
    ]
    return Evaluation(report, labels, probs, analyzer, predictions)


CARD_CHECKED_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ece", "unknown_rate")
CARD_CHECKED_ADULT_METRICS = (
    "refused_as_outside_intended_use",
    "unknown_rate",
    "wrong_label_rate",
    "covid_called_normal_rate",
)
CARD_TOLERANCE = 1e-3  # float32 kernels may differ in the last digits between CPUs


def check_bars(report: dict) -> dict:
    values = {k: report["test"][k] for k in ("accuracy", "auc", "sensitivity", "specificity", "ece")}
    values["test_unknown_rate"] = report["test"]["unknown_rate"]
    values["held_out_not_chest_unknown_rate"] = report["held_out_not_chest_unknown_rate"]
    adults = report["adults_held_out"]["all"]
    values["adult_wrong_label_rate"] = adults["wrong_label_rate"]
    values["adult_covid_called_normal_rate"] = adults["covid_called_normal_rate"] or 0.0
    values["adult_unknown_reasons_naming_intended_use"] = adults["unknown_reasons_naming_intended_use"] or 0.0
    out = {}
    for name, (op, bound) in BARS.items():
        value = values[name]
        out[name] = {"value": value, "bar": f"{op} {bound}", "pass": value >= bound if op == ">=" else value <= bound}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    result = evaluate(args)
    report, labels, probs, analyzer, predictions = (
        result.report,
        result.labels,
        result.probs,
        result.analyzer,
        result.predictions,
    )
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(args.reports / "metrics.json", report)
    with open(args.reports / "test_predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(predictions[0]))
        writer.writeheader()
        writer.writerows(predictions)
    plots.roc(labels, probs, analyzer.threshold, args.reports / "roc.png")
    plots.confusion(report["test"]["confusion"], args.reports / "confusion_matrix.png")
    plots.reliability_diagram(labels, probs, args.reports / "reliability.png")
    history = analyzer.card.get("training", {}).get("history")
    if history:
        plots.training_curves(history, args.reports / "training_curves.png")
    if args.update_card:
        card = read_card(args.model)
        card["metrics"]["test"] = {
            k: report["test"][k]
            for k in ("n", "auc", "accuracy", "sensitivity", "specificity", "ece", "unknown_rate", "confusion")
        }
        card["metrics"]["not_chest_unknown_rate_by_source"] = {
            k: v["unknown_rate"] for k, v in report["not_chest_sources"].items()
        }
        card["metrics"]["test"]["refused_as_outside_intended_use"] = report["test"]["refused_as_outside_intended_use"]
        card["metrics"]["adults_held_out"] = report["adults_held_out"]
        write_card(args.model, card)
    # PASS/FAIL only when the bars gate this run; a smoke-test model is just compared with them.
    verdicts = ("PASS", "FAIL") if args.check_bars else ("met", "below")
    for name, bar in report["bars"].items():
        print(f"{verdicts[0] if bar['pass'] else verdicts[1]:5s} {name:42s} {bar['value']:.4f}  (bar {bar['bar']})")
    print(f"analyze(): median {report['analyze_ms']['median']:.1f} ms per image")
    if args.check_card:
        stored = analyzer.card.get("metrics", {}).get("test", {})
        drift = {
            k: (stored.get(k), report["test"][k])
            for k in CARD_CHECKED_METRICS
            if stored.get(k) is None or abs(stored[k] - report["test"][k]) > CARD_TOLERANCE
        }
        stored_adults = analyzer.card.get("metrics", {}).get("adults_held_out", {}).get("all", {})
        measured_adults = report["adults_held_out"]["all"]
        drift.update(
            {
                f"adults {k}": (stored_adults.get(k), measured_adults[k])
                for k in CARD_CHECKED_ADULT_METRICS
                if (stored_adults.get(k) is None) != (measured_adults[k] is None)
                or (measured_adults[k] is not None and abs(stored_adults[k] - measured_adults[k]) > CARD_TOLERANCE)
            }
        )
        if drift:
            print(f"evaluation: test metrics differ from the model card: {drift}", file=sys.stderr)
            return 1
        print("the model card's test metrics are reproduced")
    if args.check_bars and not all(b["pass"] for b in report["bars"].values()):
        print("evaluation: at least one bar (issue 3, or issue 12 for adults) is missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
