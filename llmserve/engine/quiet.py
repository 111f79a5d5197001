"""The dependencies' warnings and log lines stay out of the user's terminal and the server log, unless
`--log-level debug`.

transformers, torch, accelerate, huggingface_hub, bitsandbytes and gguf speak to their own users in two
ways: Python warnings (DeprecationWarning, FutureWarning, UserWarning, printed to stderr once per place)
and their loggers (transformers, huggingface_hub and torch print through handlers of their own, whatever
llmserve's log level). Neither is addressed to llmserve's users, who can do nothing about it. So:

- from the import of the engine package on, warnings of those categories become DEBUG lines of the
  `llmserve.engine.dependencies` logger instead of lines on stderr (`install`);
- when a model loads, the libraries' loggers are set to pass errors only, or their warnings too when
  llmserve logs at debug level (`quiet_libraries`). A library's own variable (TRANSFORMERS_VERBOSITY,
  HF_HUB_VERBOSITY, TORCH_LOGS...) still rules where the user set it.

llmserve's own calls of deprecated APIs are not hidden by this: pytest records warnings itself (this hook
is bypassed there) and pyproject's `filterwarnings = error` fails the suite on them.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, TextIO

log = logging.getLogger("llmserve.engine.dependencies")

QUIETED: tuple[type[Warning], ...] = (
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
    UserWarning,
)
# logger name -> the library's own environment variable for its level (None: it has none)
LIBRARIES: dict[str, str | None] = {
    "transformers": "TRANSFORMERS_VERBOSITY",
    "huggingface_hub": "HF_HUB_VERBOSITY",
    "torch": "TORCH_LOGS",
    "accelerate": "ACCELERATE_LOG_LEVEL",
    "bitsandbytes": None,
    "gguf": None,
}

_shown: dict[str, Any] = {}  # "previous": the showwarning that this module's hook replaced


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if issubclass(category, QUIETED):
        log.debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
        return
    _shown["previous"](message, category, filename, lineno, file, line)


def install() -> None:
    """Routes the quieted warning categories to the debug log (idempotent)."""
    if warnings.showwarning is not _show:
        _shown["previous"] = warnings.showwarning
        warnings.showwarning = _show


def quiet_libraries() -> None:
    """The libraries' loggers at ERROR, or WARNING when llmserve logs at debug level. Call it once
    transformers may be imported (it configures its logger on first use, resetting the level)."""
    from transformers.utils import logging as transformers_logging

    level = logging.WARNING if logging.getLogger("llmserve").isEnabledFor(logging.DEBUG) else logging.ERROR
    for name, variable in LIBRARIES.items():
        if variable is not None and os.environ.get(variable):
            continue
        if name == "transformers":
            transformers_logging.set_verbosity(level)
        else:
            logging.getLogger(name).setLevel(level)
