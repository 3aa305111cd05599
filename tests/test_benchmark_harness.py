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


def test_the_floor_report_states_what_the_goals_leave_above_the_floor(monkeypatch):
    from benchmarks import floor

    monkeypatch.setattr(floor.machine, "describe", lambda: {"cpu_model": "a test CPU"})
    settings = {"workers": 2, "threads": 2, "worker_connections": 2}

    def server(p50, rps, cpu):
        return {"p50_c1_ms": p50, "rps_c4": rps, "p95_c4_ms": 50.0, "cpu_ms_per_upload": cpu, "gunicorn": settings}

    rounds = [
        {"ours": server(17.0, 100.0, 18.0), "floor": server(11.0, 180.0, 11.0), "naive": server(60.0, 20.0, 66.0)},
        {"ours": server(19.0, 110.0, 20.0), "floor": server(13.0, 180.0, 12.0), "naive": server(60.0, 30.0, 66.0)},
    ]
    text = floor.report(rounds, cores=2, other_cpu_s=0.0, duration_s=180.0)
    # Means of the rounds; ratios to the naive server's mean (25 req/s).
    assert "| ours | 18.0 | 105.0 | 4.20x |" in text
    assert "| floor | 12.0 | 180.0 | 7.20x |" in text
    # 12 ms - 12.0 ms; 6 x 25 = 150 req/s on 2 cores = 13.3 ms per upload, 11.5 of it the floor's.
    assert "which leaves 0.0 ms for everything else; ours takes 6.0 ms above the floor" in text
    assert "= 150 req/s on 2 cores = at most 13.3 ms" in text
    assert "which leaves 1.8 ms; ours uses 7.5 ms above the floor" in text
