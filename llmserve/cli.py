"""The `llmserve` command: parse arguments, build objects, run. No logic of its own.

    llmserve [--host H] [--port P] [--log-level L] multi-model --config F [--default-model-id ID]
             [--preload default|all|none]
    llmserve [--host H] [--port P] [--log-level L] plain -m MODEL_ID [--dtype D] [--device D] [--alias A]
    llmserve -i multi-model ... | -i plain ...     chat in the terminal, in process, on the default model
    llmserve chat --url http://HOST:PORT [--model ID] [--api-key K]    chat with a running server
    llmserve ray --config F [--replicas N] [--models-per-replica K] [--address ADDR] [--port P]
             serve the config on a Ray cluster (Ray Serve; docs/deploy.md)

Bad arguments or config: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from llmserve import __version__
from llmserve.build import Setup, build_app, build_registry, setup_from_args
from llmserve.config import arguments
from llmserve.config.entries import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MIN_RESIDENT,
    DEFAULT_PREFILL_CHUNK,
)
from llmserve.config.keep_alive import NEVER
from llmserve.config.keys import load_keys
from llmserve.errors import ConfigError
from llmserve.server.options import ServerOptions

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def server_options(args: argparse.Namespace) -> ServerOptions:
    """What the HTTP layer enforces; a bad keys file is a `ConfigError`."""
    keys_file = args.keys or os.environ.get("LLMSERVE_KEYS_FILE") or None
    keys = [*args.api_key]
    if os.environ.get("LLMSERVE_API_KEY"):
        keys.append(os.environ["LLMSERVE_API_KEY"])
    origins = tuple(o.strip() for o in args.cors_origins.split(",") if o.strip())
    return ServerOptions(
        api_keys=tuple(keys),
        keys=None if keys_file is None else load_keys(keys_file),
        cors_origins=origins,
        max_request_bytes=args.max_request_bytes,
        shutdown_timeout=args.shutdown_timeout,
        allow_remote_images=args.allow_remote_images,
        responses_store_size=args.responses_store_size,
        responses_store_ttl=args.responses_store_ttl,
        ui=not args.no_ui,
        open_metrics=args.open_metrics,
    )


def public_warning(host: str, options: ServerOptions) -> str | None:
    """The warning for a server that anyone on the network can use, or None."""
    if options.api_keys or options.keys or host in ("localhost", "::1") or host.startswith("127."):
        return None
    return (
        f"listening on {host} without an API key: anyone who can reach this address can use the models "
        "(set --api-key or LLMSERVE_API_KEY)"
    )


def _server_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Host, port and log level go before or after the subcommand; after wins."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--host", default=default("127.0.0.1"), help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=arguments.port, default=default(1234), help="port to listen on (default 1234)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default("info"), help="default info")
    parser.add_argument(
        "--api-key",
        action="append",
        default=default([]),
        metavar="KEY",
        help="require this key on every route but health (repeatable; also LLMSERVE_API_KEY)",
    )
    parser.add_argument(
        "--keys",
        default=default(None),
        metavar="FILE",
        help="tenants' keys (JSON or TOML): which models each may use, quotas, priority, admin rights; "
        "re-read on SIGHUP (also LLMSERVE_KEYS_FILE; docs/tenants.md)",
    )
    parser.add_argument(
        "--cors-origins",
        default=default(""),
        metavar="LIST",
        help="comma-separated origins allowed by CORS, or * (default: CORS off)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=arguments.seconds,
        default=default(30.0),
        metavar="SECONDS",
        help="on SIGTERM, how long running requests may take to finish (default 30)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=arguments.positive,
        default=default(16 * 2**20),
        metavar="N",
        help="largest request body accepted; larger is a 413 (default 16 MiB)",
    )
    parser.add_argument(
        "--allow-remote-images",
        action="store_true",
        default=default(False),
        help="let chat messages carry http(s) image URLs, fetched by the server (default: data: URLs only)",
    )
    parser.add_argument(
        "--open-metrics",
        action="store_true",
        default=default(False),
        help="with API keys, serve GET /metrics without one (for scrapers that send none, such as the "
        "Gateway API Inference Extension's endpoint picker)",
    )
    parser.add_argument(
        "--responses-store-size",
        type=arguments.non_negative,
        default=default(1000),
        metavar="N",
        help="Responses API: how many stored responses are kept, oldest dropped first; 0 keeps none "
        "(default 1000; in memory: a restart forgets them)",
    )
    parser.add_argument(
        "--responses-store-ttl",
        type=arguments.seconds,
        default=default(3600.0),
        metavar="SECONDS",
        help="Responses API: how long a stored response is kept (default 3600)",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        default=default(False),
        help="do not serve the web dashboard at /ui",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmserve", description="An OpenAI-compatible server for many LLMs in one process.")
    parser.add_argument("--version", action="version", version=f"llmserve {__version__}")
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="chat in the terminal instead of serving HTTP"
    )
    _server_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{multi-model,plain,chat,ray}")

    multi = commands.add_parser("multi-model", help="serve the models of a JSON config file")
    multi.add_argument("--config", required=True, help="the multi-model JSON config")
    multi.add_argument("--default-model-id", help="API id of the default model (default: the first model)")
    _preload_option(multi)
    _scheduling_options(multi)
    _model_source_options(multi)
    _server_options(multi, defaults=False)

    plain = commands.add_parser("plain", help="serve one model")
    plain.add_argument("-m", "--model-id", required=True, help="hub id, local directory or package:NAME")
    plain.add_argument("--alias", help="API id to serve it under (default: the model id)")
    plain.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    plain.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    _preload_option(plain)
    _scheduling_options(plain)
    _model_source_options(plain)
    _server_options(plain, defaults=False)

    ray = commands.add_parser("ray", help="serve the models of a JSON config on a Ray cluster (Ray Serve)")
    ray.add_argument("--config", required=True, help="the multi-model JSON config (same path on every node)")
    ray.add_argument("--default-model-id", help="API id of the default model (default: the first model)")
    ray.add_argument("--replicas", type=arguments.positive, default=2, help="llmserve replicas (default 2)")
    ray.add_argument(
        "--models-per-replica",
        type=arguments.positive,
        default=3,
        metavar="K",
        help="models a replica keeps, least recently used out first (default 3, Ray Serve's)",
    )
    ray.add_argument("--address", help="the Ray cluster to join (default: start one on this machine)")
    ray.add_argument(
        "--replica-cpus", type=arguments.amount, default=1.0, metavar="N", help="CPUs per replica (1)"
    )
    ray.add_argument(
        "--replica-gpus", type=arguments.amount, default=0.0, metavar="N", help="GPUs per replica (0)"
    )
    ray.set_defaults(preload="none")  # the multiplexing loads each model where its requests go
    _scheduling_options(ray)
    _model_source_options(ray)
    _server_options(ray, defaults=False)

    chat = commands.add_parser("chat", help="chat in the terminal with a running OpenAI-compatible server")
    chat.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:1234")
    chat.add_argument("--model", help="model id (default: the server's default model)")
    chat.add_argument("--api-key", default=os.environ.get("LLMSERVE_API_KEY"), help="bearer token to send")
    return parser


def _preload_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preload",
        choices=("default", "all", "none"),
        default="default",
        help="models to load in the background at start (default: the default model)",
    )


def _scheduling_options(parser: argparse.ArgumentParser) -> None:
    """How requests share the models and the models share the memory: batch and queue sizes, how many
    models are resident and for how long (residency, turns, keep-alive)."""
    parser.add_argument(
        "--max-batch-size",
        type=arguments.positive,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"sequences a model decodes together, unless its config says (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-queue",
        type=arguments.non_negative,
        default=DEFAULT_MAX_QUEUE,
        help=f"requests that may wait beyond a full batch before a 503 (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument(
        "--max-loaded-models",
        type=arguments.positive,
        metavar="N",
        help="at most N models in memory: loading another unloads the least recently used idle one "
        "(default: no limit)",
    )
    parser.add_argument(
        "--memory-budget",
        type=arguments.budget,
        metavar="SIZE",
        help="memory the loaded models may use, per device: 12GiB, or cpu=20GiB,cuda:0=70GiB; loading "
        "another model unloads the least recently used idle ones until it fits (default: no limit)",
    )
    parser.add_argument(
        "--kv-cache-memory",
        type=arguments.size,
        metavar="SIZE",
        help="memory each model's requests may hold in KV cache (e.g. 4GiB), unless its config says; a "
        "request waits until its prompt + max_tokens fit (default: derived at load, from the free "
        "memory, cgroup limits included, and --memory-budget)",
    )
    parser.add_argument(
        "--prefill-chunk",
        type=arguments.chunk,
        default=DEFAULT_PREFILL_CHUNK,
        metavar="TOKENS",
        help="prompt tokens a model reads per step: a longer prompt is read over several steps while the "
        f"other streams go on (default {DEFAULT_PREFILL_CHUNK})",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "llama.cpp", "transformers"),
        default="auto",
        help="what runs the GGUF entries whose config does not say: auto is llama.cpp when installed "
        "(pip install 'llmserve[llamacpp]'), else transformers (default auto)",
    )
    parser.add_argument(
        "--threads",
        type=arguments.positive,
        metavar="N",
        help="llama.cpp's threads for each model, unless its config says (default: the cores this "
        "process may use, cgroup quota included)",
    )
    parser.add_argument(
        "--load-wait",
        type=arguments.seconds,
        default=60.0,
        metavar="SECONDS",
        help="with --max-loaded-models or --memory-budget, how long a load waits for room before its "
        "requests get a 503 (default 60)",
    )
    parser.add_argument(
        "--min-resident",
        type=arguments.seconds,
        default=DEFAULT_MIN_RESIDENT,
        metavar="SECONDS",
        help="when models take turns in memory, a busy model keeps its turn at least this long, unless "
        f"its config says (default {DEFAULT_MIN_RESIDENT:g})",
    )
    parser.add_argument(
        "--evict-pinned",
        action="store_true",
        help="with --max-loaded-models or --memory-budget, idle models with keep_alive -1 may be unloaded "
        "too",
    )
    parser.add_argument(
        "--keep-alive",
        type=arguments.keep_alive,
        default=NEVER,
        metavar="DURATION",
        help="how long an idle model stays loaded, unless its config says: seconds or 5m, 1h...; "
        "-1 never unloads (default), 0 unloads after each request",
    )


def _alias(text: str) -> tuple[str, str]:
    pattern, sep, target = text.rpartition("=")
    if not sep or not pattern or not target:
        raise argparse.ArgumentTypeError(f"'{text}' is not PATTERN=MODEL (e.g. 'claude-*=default')")
    return pattern, target


def _model_source_options(parser: argparse.ArgumentParser) -> None:
    """Where models may come from besides the command line, and where converted ones are kept."""
    parser.add_argument(
        "--model-alias",
        type=_alias,
        action="append",
        default=[],
        metavar="PATTERN=MODEL",
        help="route model names no model has that match the glob PATTERN to MODEL (an API id or "
        "'default'), e.g. 'claude-*=default' for Claude Code; repeatable",
    )
    parser.add_argument(
        "--allow-runtime-models",
        action="store_true",
        help="let POST /v2/repository/models/NAME/load register a model from parameters.config",
    )
    parser.add_argument(
        "--model-root",
        type=arguments.directory,
        metavar="DIR",
        help="with --allow-runtime-models, local paths of registered models must lie in DIR",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where converted GGUF models are kept (default $LLMSERVE_CACHE_DIR, else ~/.cache/llmserve)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "chat":
        return _chat_over_http(args)
    try:
        setup = setup_from_args(args)
        options = server_options(args)
    except ConfigError as exc:
        print(f"llmserve: error: {exc}", file=sys.stderr)
        return 2
    if args.interactive:
        return _chat_in_process(setup)
    logging.basicConfig(
        level=logging.DEBUG if args.log_level == "trace" else args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "ray":
        return _serve_on_ray(args, setup)
    from llmserve.server.run import serve

    warning = public_warning(args.host, options)
    if warning:
        logging.getLogger("llmserve").warning(warning)
    app = build_app(setup, options)
    # uvicorn drains on SIGTERM or SIGINT, then raises the signal again; exit 0 at that point.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _serve_on_ray(args: argparse.Namespace, setup: Setup) -> int:
    try:
        from llmserve.cluster.app import run
    except ImportError as exc:
        print(
            f"llmserve: error: llmserve ray needs Ray Serve: pip install 'llmserve[ray]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from llmserve.cluster.plan import ClusterPlan

    # every replica reads them, from Ray's own working directory
    args.config = str(Path(args.config).resolve())
    args.cache_dir = args.cache_dir and str(Path(args.cache_dir).resolve())
    options = server_options(args)
    warning = public_warning(args.host, options)
    if warning:
        logging.getLogger("llmserve").warning(warning)
    capacity = sum(m.max_batch_size + m.max_queue for m in setup.models)
    plan = ClusterPlan(
        args, options, args.replicas, args.models_per_replica, capacity, args.address,
        args.host, args.port, args.replica_cpus, args.replica_gpus,
    )  # fmt: skip
    try:
        run(plan)
    except ConnectionError as exc:
        print(f"llmserve: error: cannot join the Ray cluster at '{args.address}': {exc}", file=sys.stderr)
        return 2
    return 0


def _chat_over_http(args: argparse.Namespace) -> int:
    from llmserve.chat.backends import HTTPBackend
    from llmserve.chat.repl import run_chat

    if not args.url.startswith(("http://", "https://")):
        print(f"llmserve: error: --url '{args.url}' must start with http:// or https://", file=sys.stderr)
        return 2
    return run_chat(HTTPBackend(args.url, args.api_key), model=args.model)


def _chat_in_process(setup: Setup) -> int:
    """No HTTP server: the chat talks to the registry directly (built from the same `Setup` as the
    server's, memory limits included). Logs and progress bars stay quiet."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader uses tqdm directly
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from llmserve.chat.backends import InProcessBackend
    from llmserve.chat.repl import run_chat

    registry = build_registry(setup)
    registry.start(setup.preload)
    return run_chat(InProcessBackend(registry), on_exit=registry.shutdown)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
