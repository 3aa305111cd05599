"""Micro-batching: films screened at the same moment share a forward pass, each gets its own answer."""

from __future__ import annotations

import pathlib
import threading

import numpy as np
import pytest

from webapp.inference.analyzer import Analyzer
from webapp.inference.batching import MicroBatcher
from webapp.inference.decode import decode

IMAGES = pathlib.Path(__file__).parent / "fixtures" / "images"
MODEL = pathlib.Path("webapp/weights/cxr_pneumonia.keras")
FILMS = ("normal.jpeg", "normal_2.jpeg", "pneumonia.jpeg", "pneumonia_2.jpeg", "adult.jpeg", "knee.jpg")


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(MODEL)


@pytest.fixture(scope="module")
def film_images(analyzer):
    return [decode((IMAGES / name).read_bytes(), target_size=analyzer.input_size) for name in FILMS]


def test_items_waiting_together_share_one_batch_and_keep_their_own_results():
    release, calls = threading.Event(), []

    def run_batch(items, key):
        release.wait(5)
        calls.append((list(items), key))
        return [item * 10 for item in items]

    batcher = MicroBatcher(run_batch, max_batch=8)
    first = batcher.submit(1)  # taken at once, held in run_batch until released
    while not first.running():
        pass
    rest = [batcher.submit(n) for n in (2, 3, 4)]  # wait together for the next pass
    release.set()
    assert first.result(5) == 10
    assert [f.result(5) for f in rest] == [20, 30, 40]
    assert [items for items, _ in calls] == [[1], [2, 3, 4]]


def test_a_batch_holds_at_most_max_batch_items():
    release = threading.Event()
    sizes = []

    def run_batch(items, key):
        release.wait(5)
        sizes.append(len(items))
        return items

    batcher = MicroBatcher(run_batch, max_batch=3)
    first = batcher.submit(0)
    while not first.running():
        pass
    futures = [batcher.submit(n) for n in range(1, 8)]
    release.set()
    assert [f.result(5) for f in futures] == list(range(1, 8))
    assert sizes == [1, 3, 3, 1]


def test_items_with_different_keys_never_share_a_pass():
    release = threading.Event()
    calls = []

    def run_batch(items, key):
        release.wait(5)
        calls.append((key, list(items)))
        return [(key, item) for item in items]

    batcher = MicroBatcher(run_batch)
    first = batcher.submit("a", key=0.5)
    while not first.running():
        pass
    futures = [batcher.submit("b", key=0.5), batcher.submit("c", key=0.3), batcher.submit("d", key=0.5)]
    release.set()
    assert [f.result(5) for f in futures] == [(0.5, "b"), (0.3, "c"), (0.5, "d")]
    assert calls[1:] == [(0.5, ["b", "d"]), (0.3, ["c"])]


def test_a_failing_batch_fails_its_callers_and_the_batcher_carries_on():
    def run_batch(items, key):
        if "bad" in items:
            raise ValueError("broken film")
        return items

    batcher = MicroBatcher(run_batch)
    with pytest.raises(ValueError, match="broken film"):
        batcher.run("bad")
    assert batcher.run("good") == "good"


def test_a_film_that_breaks_its_batch_fails_alone_and_the_others_get_their_answers():
    release, calls = threading.Event(), []

    def run_batch(items, key):
        release.wait(5)
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("broken film")
        return [item.upper() for item in items]

    batcher = MicroBatcher(run_batch)
    first = batcher.submit("first")
    while not first.running():
        pass
    together = [batcher.submit(name) for name in ("a", "bad", "b")]
    release.set()
    assert first.result(5) == "FIRST"
    assert together[0].result(5) == "A" and together[2].result(5) == "B"
    with pytest.raises(ValueError, match="broken film"):
        together[1].result(5)
    assert calls[1:] == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


def test_a_wrong_number_of_results_is_an_error_not_a_mix_up():
    batcher = MicroBatcher(lambda items, key: items[:-1])
    with pytest.raises(RuntimeError, match="a batch of 1 gave 0 results"):
        batcher.run("film")


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(lambda items, key: items, max_batch=0)


def test_a_window_collects_films_that_arrive_shortly_after():
    sizes = []
    batcher = MicroBatcher(lambda items, key: sizes.append(len(items)) or items, max_batch=4, window_s=0.5)
    futures = []
    futures.append(batcher.submit(0))
    futures += [batcher.submit(n) for n in (1, 2, 3)]
    assert [f.result(5) for f in futures] == [0, 1, 2, 3]
    assert sizes == [4]


def test_analyzer_answers_the_same_in_a_batch_as_alone(analyzer, film_images):
    """Parity: a film analysed within a concurrent batch gets the answer it gets alone (to 1e-5)."""
    alone = [analyzer.analyze_batch([image])[0] for image in film_images]
    together = analyzer.analyze_batch(film_images)
    for a, b in zip(alone, together, strict=True):
        assert a.label == b.label and a.unknown_reason == b.unknown_reason
        for key in a.probabilities:
            assert a.probabilities[key] == pytest.approx(b.probabilities[key], abs=1e-5)
        assert a.chest_probability == pytest.approx(b.chest_probability, abs=1e-5)
        assert np.abs(a.heatmap - b.heatmap).max() < 1e-4


def test_concurrent_analyze_calls_are_batched_and_answered_each_in_kind(analyzer, film_images):
    expected = [analyzer.analyze_batch([image])[0] for image in film_images]
    results: list = [None] * len(film_images)
    items_before = analyzer.batcher.items
    start = threading.Barrier(len(film_images))

    def screen(index):
        start.wait(5)
        results[index] = analyzer.analyze(film_images[index])

    threads = [threading.Thread(target=screen, args=(i,)) for i in range(len(film_images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.label for r in results] == [e.label for e in expected]
    for r, e in zip(results, expected, strict=True):
        assert r.probabilities["PNEUMONIA"] == pytest.approx(e.probabilities["PNEUMONIA"], abs=1e-5)
    assert analyzer.batcher.items - items_before == len(film_images)
