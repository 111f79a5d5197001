"""ModelWorker: one thread and one queue per model. It loads, generates and unloads, in that thread only.

The loop is step-based: between two decode steps it takes new messages, admits waiting requests (by
tenant: fair_queue.py), drops cancelled ones and finishes others, so all running share the step loop.

- Requests for an unloaded model load it first; since every message goes through this one queue,
  any number of concurrent first requests cause exactly one load.
- A failed load fails every request waiting at that moment; the next request tries again.
- Unload lets running requests finish, then frees the memory; requests that arrived meanwhile are
  served after an automatic reload.
- Backpressure: at most `max_batch_size` sequences run, at most `max_queue` more wait; a request beyond
  that (unless its tenant has none) is refused at once (503 `overloaded`). An accepted request is never
  dropped: it ends with its result, its error, or its client's cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from llmserve.config.entries import ModelConfig
from llmserve.config.keep_alive import IdleTimer
from llmserve.config.sampling import SamplingDefaults, Value, from_generation_config
from llmserve.engine.base import Engine, EngineFactory, GenerationConfigSource, KVCacheSource
from llmserve.engine.progress import LoadProgress
from llmserve.errors import InternalError, LLMServeError, Overloaded, ShuttingDown
from llmserve.models.admission import Admission
from llmserve.models.fair_queue import FairQueue, Holders
from llmserve.models.jobs import (
    Abort,
    Embed,
    Evict,
    Failed,
    Finished,
    Generate,
    Load,
    Message,
    Reply,
    Shutdown,
    Started,
    Unload,
    Yield,
)
from llmserve.models.kv_budget import KVLedger
from llmserve.models.lifecycle import Estimator, Slot
from llmserve.models.residency import Residency
from llmserve.models.sequences import Running, Tally, embed_all, start, step_counted
from llmserve.models.status import KVUsage, ModelState, ModelStatus, UnloadReason
from llmserve.models.usage import Usage

__all__ = ["ModelWorker"]
log = logging.getLogger(__name__)


class ModelWorker:
    """Owns one model's engine and serves its queue on a dedicated thread."""

    def __init__(
        self,
        config: ModelConfig,
        factory: EngineFactory,
        residency: Residency | None = None,
        estimator: Estimator | None = None,
        ledger: KVLedger | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.config = config
        self._residency = residency
        self.last_active = time.monotonic()
        self._queue: queue.Queue[Message] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name=f"llmserve-worker:{config.api_id}", daemon=True
        )
        self._pending = FairQueue(config.unit_id, usage)  # the waiting requests, by tenant (fair_queue.py)
        self._admission = Admission(config.unit_id, ledger)
        self._kv_held = 0  # the engine's token slots after the last step
        self._retired: set[int] = set()  # id() of the jobs retired since `_running` was last renewed
        self._running: list[Running] = []
        self._load_waiters: list[Reply[None]] = []
        self._embeds: list[Embed] = []
        self._unload_waiters: list[Reply[None]] = []
        self._preload = False
        self._stopping = False
        self._closed = False
        # Admission and every state change take it, and so does `status()`: a snapshot is consistent.
        self._lock = threading.Lock()
        self._accepted = 0  # generations submitted and not yet retired (running + waiting)
        self._holders = Holders()  # the same per tenant
        self._decoded = Tally()
        self._state = ModelState.UNLOADED
        self._reason: UnloadReason | None = None  # of the last change to unloading, unloaded or failed
        # Called on the worker thread: with the snapshot of each state change and the previous state,
        # and with this unit's id and each load progress report.
        self.on_state: Callable[[ModelStatus, ModelState], None] | None = None
        self.on_progress: Callable[[str, LoadProgress], None] | None = None
        self._slot = Slot(config, factory, residency, estimator, self._become, self._progressed)
        self._yield_since: float | None = None  # asked to yield: take no request queued from then on
        self._expires_at: float | None = None  # time.time() when keep_alive will unload the idle model
        self._idle = IdleTimer(config.keep_alive)
        self._generation: dict[str, Value] = {}  # the model's generation config, read at each load

    @property
    def unit_id(self) -> str:
        """This model version's name: `ID@VERSION` for one of several versions, else the API id."""
        return self.config.unit_id

    @property
    def _engine(self) -> Engine | None:
        return self._slot.engine

    @property
    def loaded_at(self) -> float:
        return self._slot.loaded_at

    @property
    def min_resident(self) -> float:
        return self.config.min_resident

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """What a request gets for the sampling fields it leaves out. The model's generation config is
        known once it has loaded (it stays known after an unload)."""
        return SamplingDefaults.of(self.config.sampling, self._generation)

    def status(self) -> ModelStatus:
        """This model version now, taken under the worker's lock."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> ModelStatus:
        """The caller holds `_lock`."""
        config, slot = self.config, self._slot
        # a retired job has had (or is having) its last event; it leaves `_running` after the step
        running = sum(id(run.job) not in self._retired for run in self._running)
        return ModelStatus(
            api_id=config.api_id,
            unit_id=config.unit_id,
            version=config.version,
            version_label=config.version_label,
            kind=config.kind,
            engine=config.engine,
            quant_mode=config.quant_mode,
            state=self._state,
            reason=self._reason,
            last_error=slot.last_error,
            progress=slot.progress if self._state is ModelState.LOADING else None,
            memory_bytes=slot.memory_bytes,
            load_seconds=slot.load_seconds,
            loaded_at=slot.loaded_at,
            expires_at=self._expires_at if self._state is ModelState.LOADED else None,
            sampling=self.sampling_defaults,
            queue_depth=max(0, self._accepted - running),
            running=running,
            capacity=self.capacity,
            kv=self._kv_usage(),
            context_length=None if self._engine is None else self._engine.context_length,
            chat_template=getattr(self._engine, "chat_template", None),
            footprint=tuple(sorted((slot.footprint or {}).items())),
            tokens_generated=self._decoded.total,
            parked=slot.parked is not None,
        )

    def _kv_usage(self) -> KVUsage | None:
        kv = self._slot.kv
        if kv is None or self._state is not ModelState.LOADED:
            return None
        reserved = kv.cost(run.end for run in list(self._running))
        return KVUsage(kv.tokens, reserved, self._kv_held, kv.bytes_per_token, kv.source)

    def _progressed(self, progress: LoadProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(self.config.unit_id, progress)

    def _become(self, value: ModelState, reason: UnloadReason | None) -> None:
        """Sets the state (`reason`: why it is unloading, unloaded or failed); a change is reported to
        `on_state` with its snapshot (for events and metrics), outside the lock."""
        with self._lock:
            previous, self._state = self._state, value
            if value is previous:
                return
            self._reason = reason
            status = self._snapshot()
        if self.on_state is not None:
            self.on_state(status, previous)

    # -- called from the event loop --
    def start(self) -> None:
        self._thread.start()

    def _put(self, message: Message) -> None:
        if self._closed:
            raise ShuttingDown()
        self._queue.put(message)

    @property
    def capacity(self) -> int:
        return self.config.max_batch_size + self.config.max_queue

    def check_room(self) -> None:
        """A model bigger than the whole memory budget is refused before anything is queued (400);
        reads only figures known already (callable from the event loop)."""
        error = self._slot.too_big(compute=False)
        if error is not None and self._state is not ModelState.LOADED:
            raise error

    def submit(self, job: Generate) -> None:
        """Queues a generation, or raises `Overloaded` at capacity (fair_queue.Holders: who still gets in)."""
        with self._lock:
            if self._accepted >= self.capacity and self._holders.hold(job):
                raise Overloaded(
                    f"model '{self.unit_id}' is at capacity ({self.config.max_batch_size} requests running, "
                    f"{self.config.max_queue} waiting); retry shortly",
                    retry_after=1,
                )
            self._put(job)
            self._accepted += 1
            self._holders.add(job)

    def submit_embed(self, job: Embed) -> None:
        self._put(job)

    def _retire(self, job: Generate, event: Finished | Failed | None) -> None:
        """The job leaves this worker: with its last event, or silently when its client is gone."""
        self._idle.keep_alive = self.config.keep_alive if job.keep_alive is None else job.keep_alive
        # it leaves the counts and its KV reservation goes before its client hears the end
        with self._lock:
            self._retired.add(id(job))
            self._accepted -= 1
            self._holders.remove(job)
        self._admission.reserve([run.end for run in self._running if id(run.job) not in self._retired])
        self._pending.ended(job, event.completion_tokens if isinstance(event, Finished) else None)
        if event is not None:
            job.stream.push(event)

    @property
    def closing(self) -> bool:
        return self._closed

    @property
    def pinned(self) -> bool:
        """Its entry says keep_alive -1: evicted to make room only when the server allows it."""
        return self.config.pinned

    def evict(self, timeout: float) -> bool:
        """Asks this model to unload now if it is idle; called from another model's worker thread."""
        done: Future[bool] = Future()
        try:
            self._put(Evict(done))
            return done.result(timeout)
        except (ShuttingDown, FutureTimeout):
            return False

    def yield_turn(self, since: float | None) -> None:
        """Another model waits for room: serve what was queued before `since`, then unload (None: cancel)."""
        with contextlib.suppress(ShuttingDown):
            self._put(Yield(since))

    def preload(self) -> None:
        self._put(Load(None))

    async def load(self) -> None:
        reply: Reply[None] = Reply()
        self._put(Load(reply))
        await reply.future

    async def unload(self) -> None:
        reply: Reply[None] = Reply()
        self._put(Unload(reply))
        await reply.future

    def abort(self, error: LLMServeError) -> None:
        """Fails every request running or waiting now (thread-safe; the model stays loaded)."""
        self._queue.put(Abort(error))

    def stop(self, timeout: float) -> None:
        """Ends the thread: waiting and running requests get an error, the model is unloaded."""
        self._closed = True
        self._queue.put(Shutdown())
        self._thread.join(timeout)

    # -- the worker thread --
    def _run(self) -> None:
        self._slot.estimate()  # early, so that a model too big for the memory budget is refused up front
        while not self._stopping:
            try:
                self._drain(block=not self._has_work(), timeout=self._idle.sleep(time.monotonic()))
                self._tick()
                self._unload_when_idle()
            except Exception as exc:  # a fault in the model code: fail what is in flight, keep serving
                log.exception("worker for %s failed", self.unit_id)
                reason = f"{type(exc).__name__}: {exc}"
                self._drop_engine(ModelState.FAILED, reason, "failed")
                self._fail_all(InternalError(f"model '{self.unit_id}' failed: {reason}"))
        self._drop_engine(ModelState.UNLOADED, None, "shutdown")
        self._drain(block=False)
        self._fail_all(ShuttingDown())
        for reply in self._unload_waiters:
            reply.set(None)

    def _has_work(self) -> bool:
        waiting = self._pending or self._load_waiters or self._unload_waiters or self._embeds
        return bool(self._running or waiting or self._preload or self._yield_since is not None)

    def _drain(self, block: bool, timeout: float | None = None) -> None:
        try:
            message = self._queue.get(block=block, timeout=timeout if block else None)
            while True:
                self._accept(message)
                message = self._queue.get_nowait()
        except queue.Empty:
            return

    def _accept(self, message: Message) -> None:
        if isinstance(message, Generate):
            self._pending.append(message)
        elif isinstance(message, Load):
            if message.reply is not None:
                self._load_waiters.append(message.reply)
            else:
                self._preload = True
        elif isinstance(message, Unload):
            self._unload_waiters.append(message.reply)
        elif isinstance(message, Abort):
            self._fail_all(message.error)
        elif isinstance(message, Evict):
            idle = self._engine is not None and not self._has_work()
            message.done.set_result(idle)  # decided; the slot is released once the memory is freed
            if idle:
                log.info("unloading %s to make room for another model", self.unit_id)
                self._drop_engine(ModelState.UNLOADED, None, "evicted")
        elif isinstance(message, Embed):
            self._embeds.append(message)
        elif isinstance(message, Yield):
            self._yield_since = message.since if self._engine is not None else None
        else:
            self._stopping = True

    def _tick(self) -> None:
        if self._stopping:
            return
        self._yield_when_done()
        if self._unload_waiters and not self._running:
            self._drop_engine(ModelState.UNLOADED, None)
            for reply in self._unload_waiters:
                reply.set(None)
            self._unload_waiters.clear()
        if not self._unload_waiters and (
            self._pending or self._load_waiters or self._preload or self._embeds
        ):
            self._preload = False
            if self._engine is None and not self._load():
                return
            for reply in self._load_waiters:
                reply.set(None)
            self._load_waiters.clear()
            embed_all(self._engine, self._embeds, self.unit_id)
            self._embeds.clear()
        self._drop_cancelled_waiting()
        self._prepare_arrivals()
        while (job := self._next()) is not None and self._admit(job):
            pass
        if self._running:
            self._step()

    def _load(self) -> bool:
        since = self._pending.oldest() or time.monotonic()
        self.last_active = time.monotonic()
        try:
            engine = self._slot.load(self, since, self._pending.claim())
        except LLMServeError as exc:
            self._drain(block=False)  # everyone waiting right now shares this failure
            self._fail_all(exc)
            return False
        if isinstance(engine, GenerationConfigSource):
            self._generation = from_generation_config(engine.generation_sampling, self.unit_id)
        self._admission.loaded(self._slot.kv, lambda: self._kv_held)
        self.last_active = time.monotonic()
        return True

    def _yield_when_done(self) -> None:
        """Asked to yield: once nothing queued before the request runs or waits, unload (the requests
        queued since wait for this model's next turn)."""
        since = self._yield_since
        if since is None or self._engine is None:
            self._yield_since = None
            return
        if self._running or self._pending.first(since) is not None:
            return
        self._yield_since = None
        log.info("%s yields its turn to a waiting model", self.unit_id)
        if self._residency is not None:
            self._residency.yielded()
        self._drop_engine(ModelState.UNLOADED, None, "swapped")

    def _drop_cancelled_waiting(self) -> None:
        for job in self._pending.drop(lambda job: job.stream.cancelled):
            self._admission.discard(job)
            self._retire(job, None)

    def _next(self) -> Generate | None:
        """The waiting request that may start now, if any: the model is loaded and not about to unload,
        the batch is not full, and (yielding its turn to another model) it was queued before that."""
        loaded = self._engine is not None and not self._unload_waiters
        if not loaded or len(self._running) >= self.config.max_batch_size:
            return None
        return self._pending.first(self._yield_since)

    def _prepare_arrivals(self) -> None:
        """Encodes the requests that arrived, so that one that can never be served fails now."""
        if self._engine is None or self._unload_waiters:
            return
        failed = []
        for job in self._pending:
            try:
                self._admission.prepare(self._engine, job, self.sampling_defaults)
            except LLMServeError as exc:
                failed.append((job, exc))
        for job, error in failed:
            self._pending.remove(job)
            self._retire(job, Failed(error))

    def _admit(self, job: Generate) -> bool:
        """Starts the next waiting request `job` when its tokens fit beside those running (False: it
        waits, and so do all others); a request that cannot be served fails (models/admission.py)."""
        if job.stream.cancelled:
            self._pending.remove(job)
            self._admission.discard(job)
            self._retire(job, None)
            return True
        assert self._engine is not None
        try:
            prepared = self._admission.prepare(self._engine, job, self.sampling_defaults)
            if self._admission.verdict([run.end for run in self._running], prepared) == "wait":
                return False
            run = start(self._engine, prepared)
        except LLMServeError as exc:
            self._pending.remove(job)
            self._retire(job, Failed(exc))
            return True
        except Exception as exc:  # this request's problem (e.g. a token outside the vocabulary)
            log.exception("starting a request for %s failed", self.unit_id)
            self._pending.remove(job)
            self._retire(
                job, Failed(InternalError(f"starting the request failed: {type(exc).__name__}: {exc}"))
            )
            return True
        self._pending.started(job, run.prompt_tokens)
        job.stream.push(Started(run.prompt_tokens, run.echo))
        self._running.append(run)
        return True

    def _step(self) -> None:
        assert self._engine is not None
        self.last_active = time.monotonic()
        self._running = step_counted(self._engine, self._running, self._retire, self._decoded)
        self._pending.progress((run.job, run.output.generated) for run in self._running)
        self._retired.clear()
        self._kv_held = self._engine.kv_tokens_held if isinstance(self._engine, KVCacheSource) else 0
        self._admission.reserve([run.end for run in self._running])  # what finished gives back its room

    def _unload_when_idle(self) -> None:
        """keep_alive: a loaded model with nothing running or waiting unloads when its time is up."""
        now = time.monotonic()
        if self._idle.due(now, idle=self._engine is not None and not self._has_work()):
            log.info("unloading %s: idle for its keep_alive (%.1f s)", self.unit_id, self._idle.keep_alive)
            self._drop_engine(ModelState.UNLOADED, None, "keep_alive")
        remaining = self._idle.remaining(now)
        self._expires_at = None if remaining is None else time.time() + remaining

    def _fail_all(self, error: LLMServeError) -> None:
        for run in self._running:
            if self._engine is not None:
                self._engine.release(run.seq_id)
            self._retire(run.job, Failed(error))
        for job in self._pending:
            self._admission.discard(job)
            self._retire(job, Failed(error))
        for reply in self._load_waiters:
            reply.fail(error)
        for embed in self._embeds:
            embed.reply.fail(error)
        self._embeds.clear()
        self._running.clear()
        self._pending.clear()
        self._load_waiters.clear()
        self._retired.clear()
        self._admission.reserve([])

    def _drop_engine(self, state: ModelState, error: str | None, reason: UnloadReason = "unload") -> None:
        self._kv_held = 0
        self._admission.unloaded()
        self._slot.drop(state, reason, error)
        if reason == "shutdown":
            self._slot.drop_parked()
