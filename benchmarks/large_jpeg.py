"""Decode + classify of a 3000x3000 JPEG against a 224x224 one, in the same run.

    .venv/bin/python -m benchmarks.large_jpeg [--repeats 30]

Both files are the same real radiograph (tests/fixtures/images/pneumonia.jpeg), the
large one upscaled to detector size and saved as a JPEG of quality 90. The two are
measured interleaved, so drift and other load hit both alike, and the figure that
matters is the ratio of the medians (it must stay under 3: JPEG draft mode decodes
the large file at 1/8 scale straight from the DCT coefficients). Exits non-zero
when it does not.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "images" / "pneumonia.jpeg"
MODEL = ROOT / "webapp" / "weights" / "cxr_pneumonia.keras"
MAX_RATIO = 3.0


def jpeg_of_side(side: int) -> bytes:
    image = Image.open(SOURCE).convert("L")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    from webapp.inference.analyzer import Analyzer
    from webapp.inference.decode import decode

    analyzer = Analyzer(MODEL)
    files = {"224x224": jpeg_of_side(224), "3000x3000": jpeg_of_side(3000)}
    decode_ms = {name: [] for name in files}
    total_ms = {name: [] for name in files}
    for round_ in range(args.repeats + 3):  # the first 3 rounds warm caches and are dropped
        for name, data in files.items():
            started = time.perf_counter()
            image = decode(data, target_size=analyzer.input_size)
            decoded = time.perf_counter()
            analyzer.analyze(image)
            done = time.perf_counter()
            if round_ >= 3:
                decode_ms[name].append((decoded - started) * 1000)
                total_ms[name].append((done - started) * 1000)

    print(
        f"model {analyzer.model_version}, input {analyzer.input_size}px, "
        f"{args.repeats} interleaved rounds, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'file':>10} {'bytes':>9} {'decode ms':>10} {'decode+classify ms':>19}")
    for name, data in files.items():
        print(
            f"{name:>10} {len(data):>9} {statistics.median(decode_ms[name]):>10.2f} "
            f"{statistics.median(total_ms[name]):>19.2f}"
        )
    ratio = statistics.median(total_ms["3000x3000"]) / statistics.median(total_ms["224x224"])
    print(f"ratio 3000x3000 / 224x224 (decode+classify, medians): {ratio:.2f}x (limit {MAX_RATIO:.0f}x)")
    return 0 if ratio < MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
