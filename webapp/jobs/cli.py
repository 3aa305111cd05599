"""`flask --app wsgi jobs ...`: run a queue worker, look at the queue."""

from __future__ import annotations

import logging
import time

import click
from flask import current_app

from ..cli_group import AdminGroup
from ..inference.runtime import ModelUnavailable, analyzer_for
from ..logs import install_process_logging
from ..pacs.cli import destination_or_fail, results_destination, tls_or_fail
from .agreement import check_worker_settings
from .outage_log import QueueOutageFilter
from .priority import exit_at_once, yield_cpu
from .queue import QueueUnavailable, jobs, run_recoveries

jobs_cli = AdminGroup("jobs", help="Background jobs: run a worker, show the queue.")
WORKER_READY = "jobs worker ready"
# How often a worker whose model would not load looks at the file again: two stat calls, and a load
# only once the file or its card changed (inference/runtime.py).
MODEL_RECHECK_SECONDS = 10


@jobs_cli.command("worker")
# At least one: a worker with none said "ready" and then ran no job at all, for ever.
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs run at the same time in this process.",
)
def worker(threads: int) -> None:
    """Take jobs from the queue until stopped (SIGINT finishes the running jobs, SIGTERM stops now)."""
    destination_or_fail(current_app.config)  # the worker sends the PACS results
    tls_or_fail(current_app.config)  # ... over TLS when set
    install_process_logging(QueueOutageFilter())  # a Redis outage: one line a minute, not a traceback a second
    queue = jobs()
    # Checked before the model loads: a worker on an unreachable queue would only log a traceback a second.
    reachable_or_fail(queue)
    # Said before the model loads (seconds idle, over a minute on a busy machine): /readyz warned "no
    # job worker ... never seen ... start `flask --app wsgi jobs worker`" all that time, until 5
    # December, with the worker starting. One whose model does not load is not seen again, so the
    # warning comes back after WORKER_SILENT_SECONDS.
    queue.worker_alive()
    # The model is loaded once, here, and shared by every job this process runs (threads, not
    # forked processes: TensorFlow is not fork-safe).
    yield_cpu(current_app.config["JOBS_WORKER_NICE"], current_app.config["JOBS_WORKER_TF_THREADS"])
    wait_for_model(current_app.config)
    backend = "Redis" if current_app.config.get("REDIS_URL") else f"SQLite in {current_app.config['INSTANCE_DIR']}"
    queue.worker_alive()  # again: a load on a starved machine can outlast WORKER_SILENT_SECONDS
    check_worker_settings()  # a SECRET_KEY or model other than the replicas': said now, not found out later
    # A worker that starts may be the replacement of one that was killed mid-job.
    try:
        run_recoveries(on_start=True)
    except Exception as exc:  # noqa: BLE001  the sweep runs again every minute; the worker must start
        # A full disk under the SQLite queue (or the database busy) ended the worker here with a raw
        # 60-line traceback (until 5 December; under ./scripts/run.sh that stopped gunicorn and the DICOM
        # node too), and a restarted worker the same way, until the disk had room again.
        logging.getLogger(__name__).error(
            "jobs worker: the recovery sweep at start failed (%s: %s); the scheduler runs it again every minute",
            type(exc).__name__,
            exc,
        )
    consumer = queue.huey.create_consumer(workers=threads, worker_type="thread", periodic=True)
    results = results_destination(current_app.config)
    logging.getLogger(__name__).info("%s (queue on %s, %d thread(s); PACS %s)", WORKER_READY, backend, threads, results)
    consumer.run()  # returns once stopped: SIGTERM at once, SIGINT after the running jobs have finished
    # Huey has written what it keeps (interrupted tasks flagged) and each job commits as it goes; a job
    # cut off by SIGTERM is picked up by the recovery sweep, as after a kill. Tearing down an interpreter
    # holding TensorFlow then took 1.3 s on a quiet host and 14 s at nice 10 beside two CPU-bound
    # processes: `docker stop` killed the worker past its 10 s grace (137).
    exit_at_once()


@jobs_cli.command("status")
def status() -> None:
    """Print how many jobs wait in the queue and how many are scheduled for later."""
    queue = jobs()
    reachable_or_fail(queue)
    click.echo(f"pending\t{queue.pending()}")
    click.echo(f"scheduled\t{queue.scheduled()}")


def wait_for_model(config) -> None:
    """Load the model, or say why not once and wait until it loads. Until 5 December the worker exited
    instead: under ./scripts/run.sh that stopped gunicorn and the DICOM node with it, and once restarted
    the worker stayed down until someone started it again after the file was repaired."""
    said = False
    while True:
        try:
            analyzer_for(config)
            return
        except ModelUnavailable:  # runtime.py has logged why
            if not said:
                logging.getLogger(__name__).warning(
                    "jobs worker: no model, so no job is taken; it is loaded once its file is repaired "
                    "(looked at every %d s), no restart needed",
                    MODEL_RECHECK_SECONDS,
                )
                said = True
        time.sleep(MODEL_RECHECK_SECONDS)


def reachable_or_fail(queue) -> None:
    try:
        queue.check_reachable()
    except QueueUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
