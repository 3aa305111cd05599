"""Peak memory of one decode, per image mode and size: `python -m benchmarks.decode_memory [repo]`
prints one JSON line per file (figures for docs/security.md, "Memory budget per decode"); a second
argument limits the modes, e.g. `DICOM,DICOM+`.

Each file is decoded once, for the model's 224 px input and with the budget lifted, in a fresh
process that has decoded a 64 px film of the same kind (the decoders' lazy imports are not the
file's cost): the growth of the process's peak resident memory (VmHWM, reset just before the call)
over its resident memory then is the decode's true peak, Pillow's and pydicom's C allocations
included (tracemalloc sees only Python's). `counted_mb` is what the budget counts for the file.
Passing another checkout's root measures its decoder on the same files.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SIDES = (3000, 4300, 6000)

PROBE = """
import json, re, sys
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError
warm_up, data = (open(path, "rb").read() for path in sys.argv[1:3])
decode(warm_up, target_size=224)  # the decoder's lazy imports, outside the measurement
def status_mb(field):
    with open("/proc/self/status") as status:
        return int(status.read().split(field + ":")[1].split()[0]) / 1024
try:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM) to what is resident now
except OSError:  # not Linux, or a sandbox that forbids it: nothing to measure
    print("null")
    sys.exit()
before = status_mb("VmRSS")
try:
    decode(data, target_size=224, memory_mb=100_000)
    outcome = "decoded"
except DecodeError as exc:
    outcome = exc.code
peak = status_mb("VmHWM") - before
try:  # what the budget counts, as the refusal under 1 MB says (after the measurement: it leaves garbage)
    decode(data, target_size=224, memory_mb=1)
    counted = "under 1"
except DecodeError as refused:
    counted = float(re.search(r"need (\\d+) MB", refused.message).group(1))
print(json.dumps({"outcome": outcome, "peak_growth_mb": round(peak, 1), "counted_mb": counted}))
"""


def _pattern(side: int, levels: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    return np.rint((x * 0.6 + y * 0.3 + 0.05 * np.sin(40 * x)) * (levels - 1)).clip(0, levels - 1)


def film(mode: str, side: int) -> tuple[str, bytes]:
    """(what it is, the file) for one mode at side x side."""
    grey = _pattern(side, 256).astype(np.uint8)
    buffer = io.BytesIO()
    if mode.startswith("DICOM"):
        from tests.image_samples import dicom

        if mode == "DICOM":
            return "DICOM 12 in 16 bits, from 0", dicom(_pattern(side, 4096).astype(np.uint16), bits_stored=12)
        if mode in ("DICOM F32", "DICOM F64"):  # Float / Double Float Pixel Data through a rescale
            from tests.image_samples import float_film

            double = mode.endswith("64")
            values = _pattern(side, 4096) * 0.25 - 100
            label = f"DICOM float{64 if double else 32}, rescaled"
            return label, float_film(values, double=double, RescaleSlope=2.5, RescaleIntercept=-10)
        # lowest value above 0: the grey-level table is indexed through an int32 copy
        return "DICOM 12 in 16 bits, from 100", dicom(_pattern(side, 3900).astype(np.uint16) + 100, bits_stored=12)
    if mode == "I;16":
        image = Image.fromarray(_pattern(side, 4096).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray(_pattern(side, 4096).astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(_pattern(side, 4096).astype(np.float32))
    elif mode.startswith("JPEG"):
        image = Image.fromarray(grey).convert(mode.split()[1])
    elif mode == "WEBP":
        image = Image.fromarray(grey).convert("RGB")
    else:
        image = Image.fromarray(grey).convert(mode if mode != "P+t" else "P")
    if mode == "P+t":
        image.info["transparency"] = 0
    fmt = "TIFF" if mode in ("I", "F", "CMYK") else ("JPEG" if mode.startswith("JPEG") else "PNG")
    fmt = "WEBP" if mode == "WEBP" else fmt
    image.save(buffer, fmt, **({"transparency": 0} if mode == "P+t" else {}))
    return mode if mode.startswith(("JPEG", "WEBP")) else f"{mode} {fmt}", buffer.getvalue()


MODES = (
    "L",
    "LA",
    "RGB",
    "RGBA",
    "P",
    "P+t",
    "1",
    "I;16",
    "I",
    "F",
    "CMYK",
    "JPEG L",
    "JPEG RGB",
    "WEBP",
    "DICOM",
    "DICOM+",
    "DICOM F32",
    "DICOM F64",
)


def measure(warm_up: bytes, data: bytes, folder: Path, root: Path = ROOT) -> dict | None:
    """One decode of `data` in a fresh process of `root`'s decoder, after `warm_up` (a small file of the
    same kind): its outcome, peak growth and count; None where the peak cannot be reset."""
    paths = folder / "warm-up", folder / "film"
    paths[0].write_bytes(warm_up)
    paths[1].write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        cwd=root,
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    modes = sys.argv[2].split(",") if len(sys.argv) > 2 else MODES
    with tempfile.TemporaryDirectory() as folder:
        for side in SIDES:
            for mode in modes:
                label, data = film(mode, side)
                result = measure(film(mode, 64)[1], data, Path(folder), root)
                print(json.dumps({"file": label, "side": side, **(result or {})}), flush=True)


if __name__ == "__main__":
    main()
