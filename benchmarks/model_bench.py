"""The model alone, and each stage of one upload, measured in a process of its own.

Run as `python -m benchmarks.model_bench OUT.json [--quick]` (benchmarks.run does this while no
server is up, so nothing else competes for the cores). It reports:
- the cost of loading the Analyzer (model + card + compiled function + warm-up);
- time per image at batch 1 for the serving call (forward pass + Grad-CAM), for a plain compiled
  forward pass, and for `model.predict` (what the naive server does), and per image at batch 32;
- the FLOP count of one forward pass (TensorFlow's profiler on the frozen graph), the achieved
  GFLOP/s, and this machine's float32 peak measured by a large matmul;
- the time of each stage of `screen_upload` (decode, analyze, review PNG, heat-map PNG) per input
  (the review PNG as stored with the answer; a big film's full-size copy is made after it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .inputs import latency_inputs

MATMUL_SIDE = 2048
BATCH = 32
BATCH_CALLERS = 8  # threads calling Analyzer.analyze at once in the batching figures


def timed(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def summary_ms(samples: list[float]) -> dict:
    ms = sorted(s * 1000.0 for s in samples)
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "n": len(ms)}


def forward_flops(model, size: int) -> int:
    """Float operations of one forward pass at batch 1 (a multiply-add counts as 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    def forward(batch):
        return model(batch, training=False)

    concrete = tf.function(forward).get_concrete_function(tf.TensorSpec([1, size, size, 1], tf.float32))
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def matmul_peak_gflops(repeats: int) -> float:
    import tensorflow as tf

    a = tf.random.uniform((MATMUL_SIDE, MATMUL_SIDE), dtype=tf.float32)
    b = tf.random.uniform((MATMUL_SIDE, MATMUL_SIDE), dtype=tf.float32)
    # Reading one element waits for the product without timing a 16 MB copy out of TensorFlow.
    samples = timed(lambda: tf.linalg.matmul(a, b)[0, 0].numpy(), repeats)
    return 2 * MATMUL_SIDE**3 / min(samples) / 1e9


def model_figures(model_path: Path, quick: bool) -> dict:
    import tensorflow as tf

    from webapp.inference.analyzer import Analyzer

    started = time.perf_counter()
    analyzer = Analyzer(model_path)
    load_s = time.perf_counter() - started
    size, model = analyzer.input_size, analyzer.model
    repeats = 10 if quick else 100
    rng = np.random.default_rng(0)
    one = rng.random((1, size, size, 1), dtype=np.float32)
    many = rng.random((BATCH, size, size, 1), dtype=np.float32)

    plain = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    serving = summary_ms(timed(lambda: [t.numpy() for t in tf.nest.flatten(analyzer._forward(one))], repeats))

    def run_plain(batch):
        return [t.numpy() for t in tf.nest.flatten(plain(batch))]  # the model may have several outputs

    forward = summary_ms(timed(lambda: run_plain(one), repeats))
    predict = summary_ms(timed(lambda: model.predict(one, verbose=0), max(5, repeats // 4)))
    batch = summary_ms(timed(lambda: run_plain(many), max(3, repeats // 10)))
    batch["per_image_ms"] = batch["median_ms"] / BATCH
    flops = forward_flops(model, size)
    peak = matmul_peak_gflops(5 if quick else 20)
    return {
        "model_version": analyzer.model_version,
        "input_size": size,
        "parameters": int(model.count_params()),
        "load_and_warmup_s": load_s,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "cpus": os.cpu_count(),
        },
        "serving_batch1": serving,
        "forward_batch1": forward,
        "predict_batch1": predict,
        f"forward_batch{BATCH}": batch,
        "batch": BATCH,
        "flops_per_image": flops,
        "gflops_batch1": flops / (forward["min_ms"] / 1000.0) / 1e9,
        f"gflops_batch{BATCH}": flops * BATCH / (batch["min_ms"] / 1000.0) / 1e9,
        "matmul_side": MATMUL_SIDE,
        "peak_gflops": peak,
        "analyzer": analyzer,
    }


def batching_figures(analyzer, quick: bool, callers: int = BATCH_CALLERS) -> dict:
    """Films per second through Analyzer.analyze: one caller at a time, then `callers` threads at
    once (what a worker's request threads or the queue worker's jobs do), whose films the
    micro-batcher runs together; with the mean batch it actually formed."""
    from webapp.inference.decode import decode

    small = next(u for u in latency_inputs() if u.name == "jpeg_224")
    image = decode(small.data, target_size=analyzer.input_size)
    films = 40 if quick else 400

    def sequential() -> float:
        started = time.perf_counter()
        for _ in range(films):
            analyzer.analyze(image)
        return films / (time.perf_counter() - started)

    def concurrent() -> float:
        with ThreadPoolExecutor(callers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: analyzer.analyze(image), range(films)))
            return films / (time.perf_counter() - started)

    alone = sequential()
    batches, items = analyzer.batcher.batches, analyzer.batcher.items
    together = concurrent()
    return {
        "callers": callers,
        "films": films,
        "sequential_films_per_s": alone,
        "concurrent_films_per_s": together,
        "speed_up": together / alone,
        "mean_batch": (analyzer.batcher.items - items) / max(1, analyzer.batcher.batches - batches),
        "max_batch": analyzer.batcher.max_batch,
    }


def stage_figures(analyzer, quick: bool) -> dict:
    """Each step of webapp.screening.service.screen_upload, on the benchmark inputs."""
    from webapp.config import Config
    from webapp.inference.decode import decode
    from webapp.inference.overlay import heatmap_png
    from webapp.screening import review_copy

    review_size = Config.REVIEW_IMAGE_SIZE
    repeats = 5 if quick else 30
    stages = {}
    for upload in latency_inputs():
        image = decode(upload.data, target_size=analyzer.input_size)
        analysis = analyzer.analyze(image)
        stages[upload.name] = {
            "decode": summary_ms(timed(lambda u=upload: decode(u.data, target_size=analyzer.input_size), repeats)),
            "analyze": summary_ms(timed(lambda i=image: analyzer.analyze(i), repeats)),
            "review_png": summary_ms(
                timed(lambda u=upload, i=image: review_copy.at_upload(u.data, i, review_size, True), repeats)
            ),
            "heatmap_png": summary_ms(timed(lambda a=analysis: heatmap_png(a.heatmap), repeats)),
        }
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = model_figures(args.model, args.quick)
    analyzer = figures.pop("analyzer")
    figures["batching"] = batching_figures(analyzer, args.quick)
    figures["stages"] = stage_figures(analyzer, args.quick)
    args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
