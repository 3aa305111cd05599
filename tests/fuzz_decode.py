"""Coverage-guided fuzzing of `decode()` with atheris (libFuzzer for Python).

    .venv/bin/python -m tests.fuzz_decode --seconds 600

The property: for any byte string, `decode()` returns a DecodedImage or raises
DecodeError. Any other exception, a crash in a C decoder, a hang longer than
`--timeout` seconds or memory past `--rss-limit-mb` is a finding: libFuzzer stops,
writes the input to `--artifacts` and this command exits non-zero.

The search starts from every valid sample and every hostile file the tests build,
and coverage feedback comes from Pillow's and pydicom's Python code and our own
(the C decoders underneath are exercised, not instrumented).
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUMMARY = re.compile(rb"Done (\d+) runs in (\d+) second")


def write_seeds(folder: pathlib.Path) -> int:
    from tests.hostile_corpus import hostile_corpus
    from tests.image_samples import valid_samples

    seeds = list(valid_samples().values()) + [h.data for h in hostile_corpus()]
    # Multi-megabyte seeds (decompression bombs) would slow every mutation; their
    # headers are what matters and the small ones already cover those paths.
    seeds = [s for s in seeds if len(s) <= 256 * 1024]
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i:03d}").write_bytes(seed)
    return len(seeds)


def run_worker(libfuzzer_args: list[str]) -> None:
    """Runs inside the fuzzing process: instrument, then hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["PIL", "pydicom", "webapp"]):
        from webapp.inference import dicom  # noqa: F401  imported here to be instrumented
        from webapp.inference.decode import decode
        from webapp.inference.image import DecodeError

    def test_one_input(data: bytes) -> None:
        with contextlib.suppress(DecodeError):
            decode(data, target_size=224)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
    parser.add_argument("--timeout", type=int, default=20, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=int, default=3072)
    parser.add_argument("--artifacts", type=pathlib.Path, default=ROOT / "test-artifacts" / "fuzz")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        run_worker(rest)
        return 0

    args.artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-decode-") as tmp:
        corpus = pathlib.Path(tmp) / "corpus"
        seeds = pathlib.Path(tmp) / "seeds"
        corpus.mkdir()
        seeds.mkdir()
        n_seeds = write_seeds(seeds)
        command = [
            sys.executable,
            "-m",
            "tests.fuzz_decode",
            "--worker",
            f"-max_total_time={args.seconds}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_limit_mb}",
            "-max_len=262144",
            f"-artifact_prefix={args.artifacts}/",
            "-print_final_stats=1",
            str(corpus),
            str(seeds),
        ]
        print(f"fuzzing decode() for {args.seconds} s from {n_seeds} seeds", flush=True)
        result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = result.stdout
    (args.artifacts / "last-run.log").write_bytes(log)
    runs = SUMMARY.search(log)
    if result.returncode == 0 and runs:
        print(f"fuzz_decode: {int(runs[1])} runs in {int(runs[2])} s, 0 crashes, 0 unhandled exceptions")
        return 0
    sys.stdout.buffer.write(log[-6000:])
    print(
        f"\nfuzz_decode: FAILED (exit {result.returncode}); the input that failed is in "
        f"{args.artifacts}/ and the full log in {args.artifacts}/last-run.log"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
