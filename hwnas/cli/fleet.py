"""`hwnas worker`: make this machine a measuring device of a fleet (see hwnas.fleet)."""

from __future__ import annotations

import os
import sys

import click

from hwnas.fleet import check_device_name, check_reachable, import_ray, ray_start_command
from hwnas.validate import Int


@click.command()
@click.option("--device", required=True, help="The device this machine measures as, e.g. jetson-orin or xeon-6338; "
                                              "jobs ask for it with --device. Workers of one name must be one target.")
@click.option("--cluster", default=None, help="HOST:PORT of the fleet's head node to join. Without it this machine "
                                              "starts the head node (its address is printed) and is its first worker.")
@click.option("--port", type=Int(1024, 65535), default=6379, show_default=True, help="The head node's port (without --cluster).")
@click.option("--node-ip", default=None, help="The address other machines reach this one at (default: Ray's guess).")
def worker(device, cluster, port, node_ip):
    """Join a Ray cluster as a worker for DEVICE: it measures one model at a time, each in a fresh
    process with the measurement protocol, for any job started with --cluster and --device."""

    check_device_name(device)
    if cluster:
        check_reachable(cluster)
    import_ray()
    cmd = ray_start_command(device, cluster, port, node_ip, num_cpus=1)
    where = f"joining {cluster}" if cluster else f"head node at {node_ip or '<this machine>'}:{port}"
    click.echo(f"hwnas worker: device {device}, {where}; Ctrl-C stops it", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # This process becomes `ray start --block`: a signal to it stops the node and its measurements.
    os.execvpe(cmd[0], cmd, {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


commands = [worker]
