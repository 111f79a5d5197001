"""The command line's value types: each turns an argument's text into its value or raises
`argparse.ArgumentTypeError` with a one-line reason (argparse prints it and exits 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmserve.config.keep_alive import parse_keep_alive
from llmserve.config.sizes import Budget, parse_budget, parse_size


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number (0 or more)")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds")
    return value


def amount(text: str) -> float:
    try:
        return seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number (0 or more)") from None


def directory(text: str) -> Path:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is not a directory")
    return Path(text).resolve()


def budget(text: str) -> Budget:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive size")
    return size


def chunk(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 16:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of 16 or more")
    return value


def keep_alive(text: str) -> float:
    try:
        return parse_keep_alive(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
