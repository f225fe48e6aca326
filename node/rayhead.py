"""A localnet's shared Ray instance: ``python -m node.rayhead --dir DIR``.

A Ray localnet on one machine runs one Ray instance for all its nodes, each
node in its own namespace (DESIGN section 7): three fewer Ray starts and about
half a GiB less per extra node than a private Ray per node. Each node's
supervisor still owns its actors (it is the driver that creates them), so
SIGKILL of a supervisor still takes that node's actors down with it.

This process starts Ray bound to 127.0.0.1 with the dashboard off and token
authentication on, writes ``DIR/ray-head.json`` (``{"address", "pid"}``) once
Ray is up, and keeps Ray running until SIGTERM or SIGINT. Ray's own processes
share its fate: killing this process stops them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

HEAD_FILE = "ray-head.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.rayhead")
    parser.add_argument("--dir", required=True, help="the localnet directory")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_worker_niceness", "0")  # see node.runtime.RayRuntime
    import ray

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    info = ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                    num_cpus=args.num_cpus, configure_logging=False, log_to_driver=False)
    # ray.init installs its own handlers; take SIGTERM back for a clean ray.shutdown.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = info.address_info["gcs_address"].rsplit(":", 1)[1]
    path = Path(args.dir) / HEAD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"address": f"127.0.0.1:{port}", "pid": os.getpid()}))
    os.replace(tmp, path)
    stop.wait()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
