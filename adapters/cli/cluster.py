"""`foundry worker` and `foundry dispatcher`: the two processes of a Ray fleet (docs/deploy.md)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any

WORKER_EPILOG = """\
Starts (or joins) Ray on this machine as a foundry worker node: `ray start --block` with the
labels foundry.class and foundry.site and the resources foundry.slot (one per GPU, one on a
CPU-only node) and vram-gb. A run whose hardwareNode is <class>@<site>, <class>@any or any
lands on a matching worker, one run per slot.
Environment the node's runs use: PGPASSWORD (the database password: the dispatcher never sends
it), FOUNDRY_STATE_DIR (the shared blob directory as mounted here), RAY_AUTH_MODE=token and the
cluster's token (see docs/deploy.md).
Examples:
  foundry worker --class rtx-5090 --site lab-2 --address head.lab:6379 --vram-gb 32
  foundry worker --class cpu --site desk --address head.lab:6379 --dry-run
"""

DISPATCHER_EPILOG = """\
Runs on the Ray head, one per store. Submits every requested run to a matching worker,
re-submits unfinished runs that have no live task (worker or node lost, dispatcher restarted),
never re-submits a cancelled run, and records why a run waits (forge/status shows it).
Needs FOUNDRY_DISPATCHER=ray on the machines that call forge/run, so that they leave the
execution to this process. Stop it with SIGTERM or Ctrl-C; run exactly one per store, under a
supervisor (a restart interrupts running stages, which then resume: docs/deploy.md).
Example (PGPASSWORD and FOUNDRY_STATE_DIR set in the environment):
  foundry --db postgresql://foundry@db.internal/foundry dispatcher --address 127.0.0.1:6379
"""


def add_cluster_commands(sub: Any) -> None:
    p = sub.add_parser("worker", help="start or join Ray as a labelled foundry worker node",
                       epilog=WORKER_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--class", dest="node_class", required=True,
                   help="the node class runs select, e.g. rtx-5090, h100, cpu")
    p.add_argument("--site", required=True, help="where the node is, e.g. lab-2")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", help="the Ray head to join, host:port (else RAY_ADDRESS)")
    where.add_argument("--head", action="store_true", help="start a new cluster's head here")
    p.add_argument("--port", type=int, default=6379, help="head port with --head (6379)")
    p.add_argument("--num-gpus", type=int,
                   help="GPUs to offer (default: counted with nvidia-smi; 0 without it)")
    p.add_argument("--num-cpus", type=int, help="CPUs to offer (default: Ray's count)")
    p.add_argument("--vram-gb", type=float, help="memory of each GPU, for hardware.minVramGb")
    p.add_argument("--dry-run", action="store_true", help="print the ray command; start nothing")
    p.set_defaults(run=_worker, needs_store=False)

    p = sub.add_parser("dispatcher", help="submit runs to the Ray cluster (on the head)",
                       epilog=DISPATCHER_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", help="the Ray cluster, host:port (else RAY_ADDRESS, else the "
                   "local head)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between steps (0.5)")
    p.add_argument("--lease-wait", type=float, default=60.0,
                   help="how long a task waits for an older attempt's lease (60 s)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="Ray retries of a task whose worker process died (3)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: forever)")
    p.set_defaults(run=_dispatcher)


def ray_start_command(args: argparse.Namespace) -> list[str]:
    from foundry.adapters.fleet.placement import worker_labels, worker_resources

    gpus = args.num_gpus if args.num_gpus is not None else count_gpus()
    labels = worker_labels(args.node_class, args.site)
    resources = worker_resources(gpus, args.vram_gb)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
           "--labels", ",".join(f"{k}={v}" for k, v in labels.items()),
           "--resources", json.dumps(resources), "--num-gpus", str(gpus)]
    if args.head:
        cmd += ["--head", "--port", str(args.port)]
    else:
        address = args.address or os.environ.get("RAY_ADDRESS")
        if not address:
            msg = "--address: give the Ray head (host:port), set RAY_ADDRESS, or use --head"
            raise ValueError(msg)
        cmd += ["--address", address]
    if args.num_cpus is not None:
        cmd += ["--num-cpus", str(args.num_cpus)]
    return cmd


def count_gpus() -> int:
    """NVIDIA GPUs visible here (what Ray would count), 0 when there is no nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _worker(_foundry: Any, args: argparse.Namespace) -> int:
    try:
        cmd = ray_start_command(args)
    except ValueError as e:
        sys.stderr.write(f"foundry worker: {e}\n")
        return 2
    if args.dry_run:
        sys.stdout.write(shlex.join(cmd) + "\n")
        return 0
    sys.stderr.write(f"foundry worker: ray {shlex.join(cmd[3:])}\n")
    sys.stderr.flush()
    os.execv(cmd[0], cmd)  # the worker *is* the Ray node process: signals reach it directly
    return 0  # not reached


def _dispatcher(foundry: Any, args: argparse.Namespace) -> int:
    try:
        from foundry.adapters.fleet import ray_dispatch
    except ImportError as e:
        sys.stderr.write(f"foundry dispatcher needs Ray: pip install '.[ray]' ({e})\n")
        return 2
    try:
        ray_dispatch.connect(args.address)
    except ConnectionError as e:
        sys.stderr.write(f"foundry dispatcher: cannot reach the Ray cluster: {e}\n"
                         "  start the head first (docs/deploy.md, step 3), or pass --address\n")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reconciler = ray_dispatch.Reconciler(foundry, poll_seconds=args.poll,
                                         lease_wait_seconds=args.lease_wait,
                                         max_retries=args.max_retries)
    reconciler.run_forever(stop, stop_after=args.seconds)
    return 0
