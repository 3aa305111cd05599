"""The benchmark's own logic (benchmarks/): its inputs are what they claim, and its verdicts on
statuses, rows and memory are right. Timings are never asserted here; `.ci/run` runs the harness."""

from __future__ import annotations

import pytest

from benchmarks.client import Result, Run
from benchmarks.inputs import latency_inputs, load_mix
from benchmarks.report import functional_failures, load_table, memory_verdict
from webapp.inference.decode import decode
from webapp.inference.image import DecodeError


@pytest.fixture(scope="module")
def uploads():
    return latency_inputs()


def test_latency_inputs_decode_as_their_kind(uploads):
    expected = {
        "jpeg_224": ("JPEG", 224),
        "jpeg_3000": ("JPEG", 3000),
        "png16": ("PNG", 2048),
        "dicom": ("DICOM", 2048),
    }
    for upload in uploads:
        image = decode(upload.data, target_size=128)
        assert (image.format, image.width) == expected[upload.name]
        assert image.unknown_reason is None


def test_load_mix_broken_files_are_refused_and_the_rest_decode(uploads):
    for upload, weight in load_mix(uploads):
        assert weight > 0
        if upload.expect == "refused":
            with pytest.raises(DecodeError):
                decode(upload.data, target_size=128)
        else:
            decode(upload.data, target_size=128)


def _ours(load: Run, rows: int, created: int) -> dict:
    return {"all_runs": [load], "load": load, "rows_match": rows == created, "rows": rows, "created": created}


def test_load_verdict_counts_5xx_connection_errors_and_wrong_answers():
    load = Run(
        [
            Result("normal", 201, 0.01, "NORMAL", 1),
            Result("normal", 500, 0.01),
            Result("pdf", 201, 0.01, "NORMAL", 2),
            Result("empty", 0, 0.01, error="reset"),
            Result("photo", 201, 0.02, "UNKNOWN", 3),
        ],
        wall_s=1.0,
    )
    rows = load_table(load, {"normal": "ok", "pdf": "refused", "empty": "refused", "photo": "unknown"})
    by_name = {r["upload"]: r for r in rows}
    assert by_name["normal"]["server_error"] == 1 and by_name["empty"]["connection_error"] == 1
    assert by_name["photo"]["unknown"] == 1
    failures = functional_failures(_ours(load, rows=3, created=3), {"all_runs": []}, rows)
    assert any("5xx" in f and "normal" in f for f in failures)
    assert any("pdf" in f and "wrong kind" in f for f in failures)
    assert any("empty" in f and "connection" in f for f in failures)


def test_a_clean_run_has_no_failures_and_a_row_mismatch_is_one():
    load = Run([Result("normal", 201, 0.01, "NORMAL", 1), Result("pdf", 415, 0.01)], wall_s=1.0)
    rows = load_table(load, {"normal": "ok", "pdf": "refused"})
    assert functional_failures(_ours(load, rows=1, created=1), {"all_runs": []}, rows) == []
    assert functional_failures(_ours(load, rows=2, created=1), {"all_runs": []}, rows) == [
        "database holds 2 prediction rows for 1 successful answers"
    ]


def test_memory_is_flat_only_when_no_worker_grows_past_the_tolerance():
    def sample(a: float, b: float) -> dict:
        return {"memory_mb": {1: {"rss": a, "pss": a, "uss": a}, 2: {"rss": b, "pss": b, "uss": b}}}

    assert memory_verdict([sample(600, 600), sample(610, 600)])["flat"]
    grown = memory_verdict([sample(600, 600), sample(700, 600)])
    assert not grown["flat"] and grown["peak_mb"] == 700
    recycled = memory_verdict([sample(600, 600), {"memory_mb": {3: {"rss": 500, "pss": 500, "uss": 500}}}])
    assert recycled["recycled"] == [1, 2] and not recycled["flat"]
