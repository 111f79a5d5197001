"""The Ray Serve application (ingress, replicas, directory) and `llmserve ray`'s run: start or join a
Ray cluster, run the application until SIGTERM or SIGINT, then remove it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import ray
from ray import serve
from ray.serve import Application

from llmserve.cluster.ingress import Ingress
from llmserve.cluster.listing import Directory
from llmserve.cluster.plan import APP, ClusterPlan
from llmserve.cluster.replica import Replica

log = logging.getLogger(__name__)
HEALTH_CHECK_SECONDS = 2.0  # how soon Ray notices a dead replica and starts another


def application(plan: ClusterPlan) -> Application:
    directory = serve.deployment(name="Directory", ray_actor_options={"num_cpus": 0})(Directory).bind()
    replicas = serve.deployment(
        name="Replica",
        num_replicas=plan.replicas,
        max_ongoing_requests=plan.max_ongoing,
        ray_actor_options={"num_cpus": plan.replica_cpus, "num_gpus": plan.replica_gpus},
        health_check_period_s=HEALTH_CHECK_SECONDS,
        graceful_shutdown_timeout_s=plan.options.shutdown_timeout,
    )(Replica).bind(plan, directory)
    ingress = serve.deployment(
        name="Ingress",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=plan.max_ongoing * plan.replicas,
    )(serve.ingress()(Ingress))
    return ingress.bind(plan, replicas, directory)


def run(plan: ClusterPlan) -> None:
    """Serves `plan` until SIGTERM or SIGINT. A cluster this started stops with it; a joined one only
    loses the application."""
    started = plan.address is None
    ray.init(address=plan.address, include_dashboard=False, log_to_driver=False)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve.start(http_options={"host": plan.host, "port": plan.port})
        serve.run(application(plan), name=APP, route_prefix="/", blocking=False)
        log.info("llmserve is serving on Ray at http://%s:%d", plan.host, plan.port)
        while not stop.wait(1.0):
            pass
    finally:
        if started:
            serve.shutdown()  # type: ignore[no-untyped-call]
        else:
            serve.delete(APP)
        ray.shutdown()
