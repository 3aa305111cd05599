"""The least a DICOM node can do per film: the bound for the PACS burst (docs/serving.md).

    .venv/bin/python -m benchmarks.dicom_floor [--films 200] [--rounds 2]

The burst of `benchmarks.queue_bench` (the same films, over the same 4 associations, each C-STORE
waiting for its answer) sent to a bare pynetdicom Storage SCP in a process of its own, with our
node's PDU size, whose handler reads the data set and answers Success: no spool, no database, no
screening. Prints films per second and the whole machine's busy CPU per film (sender included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from pynetdicom import AE, AllStoragePresentationContexts, evt

from tests.dicom_films import film, store
from tests.live_app import free_port
from webapp.pacs.listener import MAX_PDU_BYTES

from . import machine
from .queue_bench import ASSOCIATIONS, as_child, chunks


def serve(port: int) -> None:
    ae = AE(ae_title="FLOOR")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_pdu_size = MAX_PDU_BYTES

    def on_store(event) -> int:
        event.dataset  # noqa: B018  (decoding the data set is the node's first step too)
        return 0x0000

    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A film burst to a bare pynetdicom Storage SCP.")
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the SCP's own process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    port = free_port()
    scp = subprocess.Popen([sys.executable, "-m", "benchmarks.dicom_floor", "--serve", str(port)])
    try:
        films = [as_child(film(i)) for i in range(args.films * args.rounds)]
        time.sleep(3)  # the SCP's imports
        for index in range(args.rounds):
            part = films[index * args.films : (index + 1) * args.films]
            busy, started = machine.busy_cpu_seconds(), time.perf_counter()
            with ThreadPoolExecutor(ASSOCIATIONS) as pool:
                statuses = [s for sent in pool.map(partial(store, port), chunks(part, ASSOCIATIONS)) for s in sent]
            wall = time.perf_counter() - started
            if set(statuses) != {0}:
                raise RuntimeError(f"C-STORE statuses {set(statuses)}")
            cpu_ms = (machine.busy_cpu_seconds() - busy) * 1000.0 / len(part)
            print(
                f"round {index + 1}: {len(part) / wall:.1f} films/s over {ASSOCIATIONS} associations, "
                f"machine CPU {cpu_ms:.1f} ms per film"
            )
    finally:
        scp.terminate()
        scp.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
