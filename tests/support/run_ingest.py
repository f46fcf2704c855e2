"""Run only the ingest side of the node (Spool + DimseServer) as a process, for crash tests and the benchmark.

    python -m tests.support.run_ingest --storage DIR --port N [--ae CARDIONODE] [--min-free-mb 0]

Runs ``Spool.recover()`` first (as the node does at start), prints
``READY <port>`` on stdout once listening, stops gracefully on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading

from node.config import NodeSection
from node.ingest.dimse import DimseServer
from node.spool import Spool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_ingest")
    p.add_argument("--storage", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ae", default="CARDIONODE")
    p.add_argument("--min-free-mb", type=int, default=0)
    p.add_argument("--max-pdu", type=int, default=0)
    p.add_argument("--allowed-caller", action="append", default=[])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    node = dataclasses.replace(NodeSection(), ae_title=args.ae, host=args.host, port=args.port,
                               storage_dir=args.storage, min_free_mb=args.min_free_mb, max_pdu=args.max_pdu,
                               allowed_callers=tuple(args.allowed_caller))
    spool = Spool(node.storage_path, node.min_free_mb)
    spool.recover()
    server = DimseServer(node, spool).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"READY {server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(graceful=True)
    spool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
