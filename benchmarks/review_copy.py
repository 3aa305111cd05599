"""The review copy at the reading view's size: bytes stored per film, and what it costs an upload.

Run as `python -m benchmarks.review_copy OUT.json [--quick] [--kermany N]`. It reports, in one run:
- storage: bytes of review_png + heatmap_png per film at the configured REVIEW_IMAGE_SIZE and at
  the old 320, on the test fixtures, N official-test Kermany films (../shared/data, all 224 px, so
  never enlarged) and detector-sized films made from a fixture (benchmarks.inputs), plain and with
  sensor-like noise (an upscaled film is smoother than a real one, so it would flatter PNG);
- time: the upload's own work (decode, model, review copy) as it was (a 320 copy of the model's
  pixels) and as it is now before the answer, and the full-size copy of a big film that is made
  after the answer; medians, and ratios to "before" measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from .inputs import FIXTURES, Upload, latency_inputs
from .model_bench import summary_ms, timed

KERMANY_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "test"
OLD_SIZE = 320
NOISE_SD = 3.0  # grey levels (of 255): roughly the quantum noise of a digital chest film


def noisy_upload(upload: Upload) -> Upload:
    image = Image.open(io.BytesIO(upload.data)).convert("L")
    rng = np.random.default_rng(0)
    pixels = np.asarray(image, np.float32) + rng.normal(0, NOISE_SD, image.size[::-1])
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=95)
    return Upload(upload.name + "_noisy", upload.filename, buffer.getvalue(), upload.description + " + noise", "ok")


def films(kermany: int) -> dict[str, list[Upload]]:
    fixtures = [
        Upload(p.stem, p.name, p.read_bytes(), "fixture", "ok")
        for p in sorted(FIXTURES.glob("*.jp*g"))
        if p.stem.startswith(("normal", "pneumonia"))
    ]
    paths = sorted(KERMANY_TEST.glob("*/*.jpeg"))
    picked = random.Random(0).sample(paths, min(kermany, len(paths)))
    large = [u for u in latency_inputs() if u.name != "jpeg_224"]
    return {
        "fixtures": fixtures,
        "kermany_test": [Upload(p.stem, p.name, p.read_bytes(), "Kermany test film", "ok") for p in picked],
        "large": large + [noisy_upload(u) for u in large if u.name == "jpeg_3000"],
    }


def storage(analyzer, uploads: list[Upload], size: int) -> dict:
    from webapp.inference.decode import decode
    from webapp.inference.overlay import heatmap_png
    from webapp.screening import review_copy

    per_film = []
    for upload in uploads:
        image = decode(upload.data, target_size=analyzer.input_size)
        review = review_copy.make(upload.data, image, size)
        heat = heatmap_png(analyzer.analyze(image).heatmap)
        with Image.open(io.BytesIO(review)) as copy:
            shape = copy.size
        per_film.append({"film": upload.name, "review_png": len(review), "heatmap_png": len(heat), "review_px": shape})
    totals = [f["review_png"] + f["heatmap_png"] for f in per_film]
    return {
        "films": len(per_film),
        "mean_bytes": statistics.mean(totals),
        "max_bytes": max(totals),
        "per_film": per_film if len(per_film) <= 12 else per_film[:12],
    }


def upload_times(analyzer, uploads: list[Upload], size: int, repeats: int) -> dict:
    """The upload's own work before (a 320 copy) and now (what screen_upload does before it
    answers), and the full-size copy made after the answer for a big film."""
    from webapp.inference.decode import decode
    from webapp.screening import review_copy

    def before(u):
        image = decode(u.data, target_size=analyzer.input_size)
        analyzer.analyze(image)
        review_copy.review_png(image.pixels, OLD_SIZE)

    def now(u):
        image = decode(u.data, target_size=analyzer.input_size)
        analyzer.analyze(image)
        review_copy.at_upload(u.data, image, size, background=True)

    figures = {}
    for upload in uploads:
        image = decode(upload.data, target_size=analyzer.input_size)
        # Interleaved, so that load from elsewhere on the machine hits both alike.
        samples = {"before_320": [], "now_request_path": []}
        for _ in range(repeats):
            samples["before_320"] += timed(lambda u=upload: before(u), 1, warmup=1)
            samples["now_request_path"] += timed(lambda u=upload: now(u), 1, warmup=1)
        row = {k: summary_ms(v) for k, v in samples.items()}
        row["ratio_now_to_before"] = row["now_request_path"]["median_ms"] / row["before_320"]["median_ms"]
        if review_copy.needs_larger_decode(image, size):
            after = summary_ms(timed(lambda u=upload, i=image: review_copy.make(u.data, i, size), repeats))
            row["full_copy_after_answer"] = after
            row["ratio_full_copy_to_before"] = after["median_ms"] / row["before_320"]["median_ms"]
        figures[upload.name] = row
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kermany", type=int, default=50)
    args = parser.parse_args()

    from webapp.config import DEFAULT_MODEL_PATH, Config
    from webapp.inference.runtime import get_analyzer

    analyzer = get_analyzer(DEFAULT_MODEL_PATH)
    groups = films(5 if args.quick else args.kermany)
    size = Config.REVIEW_IMAGE_SIZE
    figures = {
        "review_size": size,
        "storage": {
            name: {str(size): storage(analyzer, uploads, size), str(OLD_SIZE): storage(analyzer, uploads, OLD_SIZE)}
            for name, uploads in groups.items()
        },
        "upload_ms": upload_times(
            analyzer, groups["fixtures"][:1] + groups["large"], size, repeats=3 if args.quick else 15
        ),
    }
    args.out.write_text(json.dumps(figures, indent=2))
    for name, sizes in figures["storage"].items():
        for s, row in sizes.items():
            print(
                f"storage {name:13s} @{s:>4}: {row['films']:3d} films, mean {row['mean_bytes'] / 1024:7.1f} KiB, "
                f"max {row['max_bytes'] / 1024:7.1f} KiB"
            )
    for name, row in figures["upload_ms"].items():
        later = (
            f"  full copy after the answer x{row['ratio_full_copy_to_before']:.2f}"
            if "full_copy_after_answer" in row
            else ""
        )
        print(
            f"upload {name:16s} before {row['before_320']['median_ms']:6.1f} ms  "
            f"now x{row['ratio_now_to_before']:.2f}{later}"
        )


if __name__ == "__main__":
    main()
