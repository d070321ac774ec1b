"""How the widgets tell the user that something went wrong.

An error whose message says what to change (bad input, missing weights or files) is shown
in the widget as one short line in the widget's own words (:func:`error_line`), its full
text one click away ("Details…"). Anything else is a bug: it is logged with its traceback
and shown as napari's error notification, whose traceback is one click away.
"""

from __future__ import annotations

import logging

from napari.utils.notifications import notification_manager

logger = logging.getLogger("napari_mobilesam")

BUG_STATUS = "{what} failed with an internal error: see the error notification for details."


def expected_errors() -> tuple[type[Exception], ...]:
    """Errors of the core whose message tells the user what to do (shown in the widget).

    Bad input (:class:`napari_mobilesam.errors.UserInputError`), missing weights or
    detectors, and missing files. Anything else, a plain ``ValueError`` from deep inside
    numpy included, is a bug and goes to :func:`report_bug`.
    """
    from napari_mobilesam.errors import UserInputError
    from napari_mobilesam.segevery.discovery import DetectorUnavailableError, InvalidDetectorError
    from napari_mobilesam.weights.fetch import WeightsError

    return (
        UserInputError,
        WeightsError,
        DetectorUnavailableError,
        InvalidDetectorError,
        FileNotFoundError,
    )


def error_line(what: str, error: BaseException, choices: str = "") -> str:
    """The short line a widget shows for an expected ``error`` of the work ``what``.

    Missing weights and detectors get a line of their own that names ``choices`` (what the
    widget offers instead, in its own words); other errors their message's first line.
    The full message belongs in the details (``str(error)``).

    Examples
    --------
    >>> error_line("SegEvery", FileNotFoundError("No such file: a.pt"))
    'SegEvery failed: No such file: a.pt'
    """
    from napari_mobilesam.segevery.discovery import DetectorUnavailableError
    from napari_mobilesam.weights.fetch import WeightsError

    instead = f": {choices}" if choices else ""
    if isinstance(error, DetectorUnavailableError):
        return f"{what} failed: the object detector file is not available{instead}."
    if isinstance(error, WeightsError):
        return f"{what} failed: the model weights could not be found or loaded (see Details)."
    lines = str(error).strip().splitlines()
    return f"{what} failed: {lines[0] if lines else type(error).__name__}"


def report_bug(what: str, error: BaseException) -> str:
    """Log ``error`` with its traceback, show it as napari's error notification, and return
    the short status line for the widget (``what`` names the work that failed)."""
    logger.error("%s failed", what, exc_info=(type(error), error, error.__traceback__))
    notification_manager.receive_error(type(error), error, error.__traceback__)
    return BUG_STATUS.format(what=what)
