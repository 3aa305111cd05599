"""What the intended-use gate adds to the serving call, measured in one run.

    python -m benchmarks.gate_cost [--model webapp/weights/cxr_pneumonia.keras] [--repeats 300]

Builds the serving function (forward pass + feature distance + Grad-CAM, one compiled call) for
the shipped model and for the same model without its gate output, and times the two at batch 1,
interleaved call by call so that whatever else the machine is doing hits both alike. Reports
the medians, their difference and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def interleaved(functions: dict, batch, repeats: int) -> dict[str, list[float]]:
    for fn in functions.values():
        for _ in range(5):
            [t.numpy() for t in fn(batch)]
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            started = time.perf_counter()
            [t.numpy() for t in fn(batch)]
            samples[name].append((time.perf_counter() - started) * 1000.0)
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("webapp/weights/cxr_pneumonia.keras"))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import keras

    from webapp.inference.analyzer import Analyzer
    from webapp.inference.forward import build_forward
    from webapp.inference.model_card import GATE_SECTION

    analyzer = Analyzer(args.model)
    gate_output = analyzer.card[GATE_SECTION]["output"]
    model = analyzer.model
    without = keras.Model(model.input, [o for i, o in enumerate(model.outputs) if i != gate_output])
    layer = analyzer.params.gradcam_layer
    functions = {"with_gate": build_forward(model, layer), "without_gate": build_forward(without, layer)}
    batch = np.random.default_rng(0).random((1, analyzer.input_size, analyzer.input_size, 1), dtype=np.float32)
    samples = interleaved(functions, batch, args.repeats)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    report = {
        "model_version": analyzer.model_version,
        "repeats": args.repeats,
        "median_ms": medians,
        "gate_adds_ms": medians["with_gate"] - medians["without_gate"],
        "ratio_with_to_without": medians["with_gate"] / medians["without_gate"],
        "parameters": {"with_gate": int(model.count_params()), "without_gate": int(without.count_params())},
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
