"""Where a llama.cpp sequence's cells live, and the prompt beginnings sequences share.

The KV cache is one context or a few ("lanes", engine/llamacpp_plan.py), each `cells` token slots shared
by the sequences placed in it. A lane's context is built when a sequence first goes there. Each sequence
reserves the cells it may come to hold (prompt + max_tokens) in its lane, so a decode never runs out.

In a shared cache, cells can belong to several sequences (`Context.share`: nothing is copied). A new
prompt that begins like one in a lane (the chat template's system prompt, a shared instruction, tool list
or document, the earlier turns of the same conversation: at least `MIN_SHARED` tokens) takes those cells
instead of reading them again, from
- a running sequence of the lane, once it has written them (the new one waits for them), or
- a finished sequence whose cells the lane kept (`Kept`): a released sequence's cells stay, holding its
  slot, until its room is needed; then the least recently used go first. They never hold back a request:
  a lane has room for a request when its reservations leave room, whatever it keeps. Kept cells are not
  free either: every row's attention reads every used cell of its lane up to the last one (masked, but
  read), and new cells go after the kept ones: 16 streams beside their predecessors' kept cells decoded
  14% slower (Q4_1), 23% (Q4_0). So a lane keeps sequences only while at most `KEEP_BESIDE` run in it:
  one conversation (or two) finds its earlier turns kept; a busy lane frees what it kept and shares
  only between running sequences.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmserve.engine.llamacpp_lib import Context, LlamaFileError
from llmserve.errors import InternalError

MIN_SHARED = 16  # prompt tokens in common, the fewest worth sharing
LANE_FILL = 16  # sequences a lane takes before the next lane is used (few rows batch best in one pass)
KEEP_BESIDE = 2  # running sequences a lane may have and still keep finished ones


@dataclass
class Kept:
    """A finished sequence's cells, kept for a prompt that begins alike."""

    slot: int
    tokens: list[int]  # the tokens its cells hold, in order
    used: int  # when it was kept or last shared (the least recently used is dropped first)


@dataclass
class Lane:
    free_slots: list[int]
    context: Context | None = None  # built when a sequence first goes there
    reserved: int = 0  # the cells its running sequences may come to hold (prompt + max_tokens each)
    sequences: int = 0
    kept: list[Kept] = field(default_factory=list)

    @property
    def kept_cells(self) -> int:
        return sum(len(k.tokens) for k in self.kept)


@dataclass(frozen=True)
class Live:
    """A running sequence, as a donor: its id, lane and prompt."""

    seq_id: int
    lane: int
    prompt: list[int]


@dataclass(frozen=True)
class Placement:
    lane: int
    slot: int
    taken: int  # prompt tokens already in its cells (from a kept sequence)
    donor: int | None  # a running sequence whose first `shared` cells it takes once they are written
    shared: int


class Lanes:
    def __init__(
        self, count: int, slots: int, first: Context, build: Callable[[], Context], *, sharing: bool
    ) -> None:
        self.lanes = [Lane(list(range(slots - 1, -1, -1))) for _ in range(count)]
        self.lanes[0].context = first
        self.cells = first.cells  # of each lane
        self._build = build
        self._sharing = sharing  # a shared cache (in a split one, sharing would copy between streams)
        self._clock = itertools.count()

    def context(self, lane: int) -> Context:
        context = self.lanes[lane].context
        assert context is not None, "a lane with sequences has its context"
        return context

    def room(self, end: int) -> bool:
        """Whether a sequence that may come to hold `end` tokens has a lane with room."""
        return any(self._roomy(lane, end) for lane in self.lanes)

    def _roomy(self, lane: Lane, end: int) -> bool:
        return lane.reserved + end <= self.cells and bool(lane.free_slots or lane.kept)

    def place(self, end: int, prompt: list[int], live: Sequence[Live]) -> Placement:
        """Places a new sequence in a lane with room that keeps the lanes balanced: one with fewer than
        `LANE_FILL` sequences, else one of those with the fewest (a step's attention reads rows x their
        lane's cells: 64 rows in one lane stepped 2.7x slower than 32 and 32 in two). Among those, the
        one whose running or kept sequence begins like `prompt` for the most tokens, else the first."""
        roomy = [i for i, lane in enumerate(self.lanes) if self._roomy(lane, end)]
        if not roomy:
            raise InternalError(f"no llama.cpp lane has room for a sequence of {end} tokens")
        balanced = [i for i in roomy if self.lanes[i].sequences < LANE_FILL]
        if not balanced:
            fewest = min(self.lanes[i].sequences for i in roomy)
            balanced = [i for i in roomy if self.lanes[i].sequences == fewest]
        index, common, donor = self._donor(balanced, prompt, live)
        if index is None:
            index = balanced[0]
        lane = self.lanes[index]
        if lane.context is None:
            try:
                lane.context = self._build()
            except LlamaFileError as exc:
                raise InternalError(f"building a llama.cpp lane failed: {exc}") from None
        lane.reserved += end
        lane.sequences += 1
        slot = self._slot(lane, spare=donor if isinstance(donor, Kept) else None)
        taken = 0
        if isinstance(donor, Kept) and donor in lane.kept:
            lane.context.share(donor.slot, slot, common)
            donor.used = next(self._clock)
            taken = common
        self._trim(lane)
        if isinstance(donor, Live):
            return Placement(index, slot, 0, donor.seq_id, common)
        return Placement(index, slot, taken, None, 0)

    def _donor(
        self, roomy: list[int], prompt: list[int], live: Sequence[Live]
    ) -> tuple[int | None, int, Live | Kept | None]:
        """The lane, length and donor of the longest beginning in common with `prompt` (short of its
        last token, whose logits the new sequence needs); a kept donor wins a tie (it is written)."""
        best: tuple[int | None, int, Live | Kept | None] = (None, MIN_SHARED - 1, None)
        if not self._sharing:
            return best
        limit = len(prompt) - 1
        for index in roomy:
            for kept in self.lanes[index].kept:
                common = common_prefix(kept.tokens, prompt, limit)
                if common > best[1] or (common == best[1] and isinstance(best[2], Live)):
                    best = (index, common, kept)
        for seq in live:
            if seq.lane in roomy:
                common = common_prefix(seq.prompt, prompt, limit)
                if common > best[1]:
                    best = (seq.lane, common, seq)
        return best if best[2] is not None else (None, 0, None)

    def _slot(self, lane: Lane, spare: Kept | None) -> int:
        """A free slot of `lane`, dropping its least recently used kept sequence (`spare` last) if none."""
        if not lane.free_slots:
            victims = sorted(lane.kept, key=lambda k: (k is spare, k.used))
            self._drop(lane, victims[0])
        return lane.free_slots.pop()

    def _trim(self, lane: Lane) -> None:
        """Drops kept sequences, least recently used first, until the reservations and the kept cells
        fit the lane (kept cells shared with a running sequence are counted twice: it errs on room);
        all of them when more than `KEEP_BESIDE` sequences run."""
        while lane.kept and (lane.reserved + lane.kept_cells > self.cells or lane.sequences > KEEP_BESIDE):
            self._drop(lane, min(lane.kept, key=lambda k: k.used))

    def _drop(self, lane: Lane, kept: Kept) -> None:
        lane.kept.remove(kept)
        self.context(self.lanes.index(lane)).forget(kept.slot)
        lane.free_slots.append(kept.slot)

    def release(self, lane_index: int, slot: int, end: int, tokens: list[int]) -> None:
        """A sequence reserving `end` leaves; its cells, holding `tokens`, are kept for a prompt that
        begins alike (replacing a kept sequence they begin with), else freed."""
        lane = self.lanes[lane_index]
        lane.reserved -= end
        lane.sequences -= 1
        if not self._sharing or len(tokens) < MIN_SHARED:
            self.context(lane_index).forget(slot)
            lane.free_slots.append(slot)
            return
        for old in [k for k in lane.kept if common_prefix(k.tokens, tokens, len(k.tokens)) == len(k.tokens)]:
            self._drop(lane, old)  # the new one holds all of it, and more
        lane.kept.append(Kept(slot, tokens, next(self._clock)))
        self._trim(lane)

    def drop_kept(self) -> None:
        """Frees every kept sequence's cells."""
        for lane in self.lanes:
            for kept in list(lane.kept):
                self._drop(lane, kept)

    @property
    def kept_tokens(self) -> int:
        return sum(lane.kept_cells for lane in self.lanes)

    def close(self) -> None:
        for lane in self.lanes:
            if lane.context is not None:
                lane.context.close()
                lane.context = None
            lane.kept.clear()


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many tokens `a` and `b` have in common from their start, at most `limit`."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n
