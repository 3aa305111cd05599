"""`flask --app wsgi dicom listen`: run the DICOM node."""

from __future__ import annotations

import logging
import signal

import click
from flask import current_app

from ..cli_group import AdminGroup
from ..env import exit_on_config_error
from ..jobs.priority import exit_at_once, yield_cpu
from ..logs import install_process_logging
from . import listener, tls
from .sender import DestinationError, parse_destination

dicom_cli = AdminGroup("dicom", help="The DICOM node: receive films from the PACS, send results back.")
LISTENER_READY = "dicom node listening"


@dicom_cli.command("listen")
def listen() -> None:
    """Serve C-ECHO and C-STORE until stopped; screening runs on the job queue (`flask jobs worker`)."""
    install_process_logging()
    config = current_app.config
    destination_or_fail(config)  # a typo stops the node too, not only the worker that sends
    tls_or_fail(config)
    yield_cpu(config["DICOM_LISTENER_NICE"], tf_threads=0)  # uploads first (jobs/priority.py)
    # In a container the node is PID 1, which the kernel gives no default action for SIGTERM:
    # `docker stop` waited out its grace period and killed it (137). SIGTERM now stops it as Ctrl-C
    # does: pynetdicom closes the server and waits for the associations in progress.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    allowed = ", ".join(config["DICOM_ALLOWED_CALLING_AETS"]) or "any calling AE title"

    def listening() -> None:
        logging.getLogger(__name__).info(
            "%s as %s on %s:%d%s (accepting %s; the job worker screens the films and sends the results)",
            LISTENER_READY,
            config["DICOM_AE_TITLE"],
            config["DICOM_BIND"],
            config["DICOM_PORT"],
            tls_words(config),
            allowed,
        )

    try:
        listener.serve(current_app._get_current_object(), listening)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config['DICOM_BIND']}:{config['DICOM_PORT']}: {exc}") from exc
    exit_at_once()


def results_destination(config) -> str:
    """Where this process sends the PACS results, for its start-up line. Only the job worker sends
    them, with its own DICOM_RESULTS_DESTINATION: the node's line used to name the node's value, so a
    node given the setting and a worker not given it read "results to PACS@..." while none was built."""
    destination = config.get("DICOM_RESULTS_DESTINATION")
    if not destination:
        return "no results sent: DICOM_RESULTS_DESTINATION is not set"
    return f"results to {destination}{tls_words(config)}"


def tls_words(config) -> str:
    """For the start-up lines: whether the node's port and the deliveries speak TLS (tls.py)."""
    if not config.get(tls.CERT):
        return ""
    return " over TLS, peers' certificates checked" if config.get(tls.CA) else " over TLS"


def tls_or_fail(config) -> None:
    """Check the DICOM TLS settings at start-up in the two processes that use them (the node and the job
    worker), with the one line and exit status of any bad setting (env.py), rather than refuse every
    film or fail every result later. The web app makes no DICOM connection: it needs no copy of the
    node's private key, so it does not look at them."""
    with exit_on_config_error("cxr-screen"):
        tls.check(config)


def destination_or_fail(config) -> None:
    """Check DICOM_RESULTS_DESTINATION at start-up in the two processes that read it (the
    node and the job worker, which sends the results), so that a mistyped one stops them with its
    line instead of failing every result later in the outbox."""
    destination = config.get("DICOM_RESULTS_DESTINATION")
    if destination:
        try:
            parse_destination(destination)
        except DestinationError as exc:
            raise click.ClickException(str(exc)) from exc
