"""How a sequence chooses its tokens, the same for every engine: its sampling parameters and random
generator, the history its penalties read, its grammar, and the log probabilities of its last token;
and `choose`, which picks the next token of each row of a logits matrix (`[rows, vocab]`, any engine's).
Torch is imported by the first sequence that samples, not before (the llama.cpp engine runs greedy
requests without it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmserve.engine.base import GenerationParams, TokenLogprob
from llmserve.engine.grammar import Guide, Guides
from llmserve.engine.history import GREEDY_BELOW, History
from llmserve.errors import InvalidRequest

if TYPE_CHECKING:
    import torch


@dataclass
class Chooser:
    params: GenerationParams
    generator: torch.Generator | None  # None: greedy
    history: History | None = None  # kept only when its parameters shape the logits (penalties...)
    guide: Guide | None = None  # its grammar, with constrained decoding
    logprobs: TokenLogprob | None = None  # the last token's, when asked for

    @classmethod
    def begin(
        cls,
        params: GenerationParams,
        prompt_ids: Sequence[int],
        vocab: int,
        guides: Guides,
        device: torch.device | str = "cpu",
    ) -> Chooser:
        """The chooser of a new sequence; raises `InvalidRequest` for a token id outside the vocabulary
        (in the prompt, `logit_bias` or `stop_token_ids`) or a grammar that does not compile."""
        for token in (*(i for i, _ in params.logit_bias), *params.stop_token_ids, *prompt_ids):
            if not 0 <= token < vocab:
                raise InvalidRequest(f"token id {token} is outside this model's vocabulary (0-{vocab - 1})")
        generator = None
        if params.temperature >= GREEDY_BELOW:
            import torch

            generator = torch.Generator(device=device)
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        guide = None if params.constraint is None else guides.guide(params.constraint)
        history = None
        if params.shapes_logits:
            history = History(list(prompt_ids) if params.repetition_penalty != 1.0 else ())
        return cls(params, generator, history, guide)

    @property
    def plain_greedy(self) -> bool:
        """Its next token is the raw logits' argmax: greedy, nothing shaping the logits, no grammar, no
        log probabilities to report."""
        return (
            self.generator is None
            and self.guide is None
            and self.params.logprobs is None
            and not self.params.shapes_logits
        )

    def took(self, token: int) -> None:
        """`token` is the sequence's next one."""
        if self.history is not None:
            self.history.generated.append(token)

    def take_logprobs(self) -> TokenLogprob | None:
        found, self.logprobs = self.logprobs, None
        return found


_NO_HISTORY = History()


def choose(logits: torch.Tensor, choosers: Sequence[Chooser], enders: Collection[int]) -> list[int]:
    """The next token of each row (within its grammar, if it has one); records the log probabilities
    (of the raw logits) of the rows that asked, and advances the grammars."""
    from llmserve.engine.sampling import sample_rows, token_logprob

    allowed = logits
    if any(c.guide is not None for c in choosers):
        allowed = logits.float().clone()
        for row, chooser in enumerate(choosers):
            if chooser.guide is not None:
                allowed[row] = chooser.guide.mask(logits[row])
    tokens = sample_rows(
        allowed,
        [c.params for c in choosers],
        [c.generator for c in choosers],
        [c.history or _NO_HISTORY for c in choosers],
        enders,
    )
    for row, (chooser, token) in enumerate(zip(choosers, tokens, strict=True)):
        if chooser.params.logprobs is not None:
            chooser.logprobs = token_logprob(logits[row], token, chooser.params.logprobs)
        if chooser.guide is not None:
            chooser.guide.advance(token)
    return tokens
