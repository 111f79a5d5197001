"""ClusterPlan: what `llmserve ray` asks of the cluster. Every replica and the ingress build their own
objects from it (build.py), so it carries the command line itself, not objects built from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llmserve.server.options import ServerOptions

APP = "llmserve"  # the Ray Serve application's name
REPLICA_HEADER = b"x-llmserve-replica"  # every response names the replica (or replicas) that served it


@dataclass(frozen=True)
class ClusterPlan:
    args: argparse.Namespace  # the command line: build.setup_from_args on each replica and the ingress
    options: ServerOptions
    replicas: int
    models_per_replica: int  # Ray Serve's multiplexing keeps at most this many models on a replica
    max_ongoing: int  # requests a replica takes at once: its models' batches and queues together
    address: str | None = None  # a Ray cluster to join; None: start one on this machine
    host: str = "127.0.0.1"
    port: int = 1234
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
