"""Errors that tell the user what to change: bad input, as opposed to a bug.

Every check of an argument or a file at the library's boundary raises one of these, with
a message that says what was expected. They subclass the built-in error a Python user
would catch (``ValueError``, ``TypeError``), so ``except ValueError`` keeps working. The
napari widgets show them as a one-line status; any other exception is a bug and is
reported with its traceback.

Examples
--------
>>> from napari_mobilesam.errors import InvalidValueError, UserInputError
>>> issubclass(InvalidValueError, ValueError) and issubclass(InvalidValueError, UserInputError)
True
"""

from __future__ import annotations

__all__ = ["InvalidTypeError", "InvalidValueError", "UserInputError"]


class UserInputError(Exception):
    """An argument, a setting or a file that the library cannot use, with the reason."""


class InvalidValueError(UserInputError, ValueError):
    """A value out of range, of the wrong shape, or otherwise unusable."""


class InvalidTypeError(UserInputError, TypeError):
    """An argument of a type the library does not accept."""
