"""Argument types shared by the console script's commands: each says what was expected."""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_number", "fraction", "non_negative", "number", "positive"]


def number(text: str, kind: type) -> float | int:
    """``text`` as ``kind`` (int or float), or an argparse error that says which."""
    try:
        return kind(text)
    except ValueError:
        name = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None


def finite_number(text: str) -> float:
    """Any finite number."""
    value = number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A number between 0 and 1."""
    value = number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive(text: str) -> int:
    """A whole number of at least 1."""
    value = number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def non_negative(text: str) -> int:
    """A whole number of 0 or more."""
    value = number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, got {text}")
    return value
