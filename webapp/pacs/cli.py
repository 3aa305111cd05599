"""`flask --app wsgi dicom listen`: run the DICOM node."""

from __future__ import annotations

import logging
import signal

import click
from flask import current_app

from ..cli_group import AdminGroup
from ..jobs.priority import yield_cpu
from ..logs import install_process_logging
from . import listener
from .sender import DestinationError, parse_destination

dicom_cli = AdminGroup("dicom", help="The DICOM node: receive films from the PACS, send results back.")
LISTENER_READY = "dicom node listening"


@dicom_cli.command("listen")
def listen() -> None:
    """Serve C-ECHO and C-STORE until stopped; screening runs on the job queue (`flask jobs worker`)."""
    install_process_logging()
    config = current_app.config
    destination = destination_or_fail(config)
    yield_cpu(config["DICOM_LISTENER_NICE"], tf_threads=0)  # uploads first (jobs/priority.py)
    # In a container the node is PID 1, which the kernel gives no default action for SIGTERM:
    # `docker stop` waited out its grace period and killed it (137). SIGTERM now stops it as Ctrl-C
    # does: pynetdicom closes the server and waits for the associations in progress.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    allowed = ", ".join(config["DICOM_ALLOWED_CALLING_AETS"]) or "any calling AE title"

    def listening() -> None:
        logging.getLogger(__name__).info(
            "%s as %s on %s:%d (accepting %s; results to %s)",
            LISTENER_READY,
            config["DICOM_AE_TITLE"],
            config["DICOM_BIND"],
            config["DICOM_PORT"],
            allowed,
            destination or "nowhere: DICOM_RESULTS_DESTINATION is not set",
        )

    try:
        listener.serve(current_app._get_current_object(), listening)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config['DICOM_BIND']}:{config['DICOM_PORT']}: {exc}") from exc


def destination_or_fail(config) -> str | None:
    """DICOM_RESULTS_DESTINATION as set, checked at start-up by the two processes that use it (the
    node and the job worker, which sends the results), so that a mistyped one stops them with its
    line instead of failing every result later in the outbox."""
    destination = config.get("DICOM_RESULTS_DESTINATION")
    if destination:
        try:
            parse_destination(destination)
        except DestinationError as exc:
            raise click.ClickException(str(exc)) from exc
    return destination
