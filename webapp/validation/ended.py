"""The rule for changing a validation run after the fact (deleting it, redacting its films): it must have
ended. While it is queued or running, its job may be writing its films' rows at that very moment."""

from __future__ import annotations

from collections.abc import Callable

from ..models import RUN_DONE, RUN_FAILED, ValidationRun
from ..params import row_by_id
from ..refusal import Refusal

ENDED = (RUN_DONE, RUN_FAILED)


def still_working(run: ValidationRun, refusal: type[Refusal], then: str) -> Refusal | None:
    """`refusal` (409 run_working, saying what to do `then`) for a run that has not ended, else None."""
    if run.status in ENDED:
        return None
    return refusal("run_working", f"Validation run {run.id} is still {run.status}: {then}", 409)


def ended_run(run_id: int, refusal: type[Refusal], problem: Callable[[ValidationRun], Refusal | None]) -> ValidationRun:
    """The run `run_id`, or `refusal` raised: 404 for no such run, else the `problem` found with it."""
    run = row_by_id(ValidationRun, run_id)
    if run is None:
        raise refusal("not_found", f"No validation run {run_id}.", 404)
    found = problem(run)
    if found:
        raise found
    return run
