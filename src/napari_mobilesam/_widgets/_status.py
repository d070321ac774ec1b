"""The status area of a dock widget: one line that never grows the window, its full text
one click away, and the progress of a long run (slice k of n, tile k of n).

A message is shown on one line, elided to the widget's width (superqt's
``QElidingLabel``); its full text is the line's tooltip and, when it does not fit or has
details (an error's full explanation), a "Details…" button shows it in a message box.
The progress row is fed by the same callbacks as napari's activity-dock bars.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QResizeEvent
from qtpy.QtWidgets import (
    QHBoxLayout,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

DETAILS = "Details…"


class StatusLine(QWidget):
    """One status line, a "Details…" button and a progress row.

    Examples
    --------
    >>> status = StatusLine()  # doctest: +SKIP
    >>> status.show_message("SegEvery failed.", details="Why ...")  # doctest: +SKIP
    >>> status.show_progress("Propagating: slice", 3, 30)  # doctest: +SKIP
    >>> status.hide_progress()  # doctest: +SKIP
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._message = ""
        self._details = ""
        self.details_box: QMessageBox | None = None
        self.label = QElidingLabel()
        self.label.setElideMode(Qt.TextElideMode.ElideRight)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.details_button = QPushButton(DETAILS)
        self.details_button.setVisible(False)
        self.details_button.clicked.connect(self.open_details)
        self.step = QElidingLabel()
        self.step.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(self.label.fontMetrics().height())
        message_row = QHBoxLayout()
        message_row.setContentsMargins(0, 0, 0, 0)
        message_row.addWidget(self.label, 1)
        message_row.addWidget(self.details_button)
        progress_row = QHBoxLayout()
        progress_row.setContentsMargins(0, 0, 0, 0)
        progress_row.addWidget(self.step, 1)
        progress_row.addWidget(self.bar, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(message_row)
        layout.addLayout(progress_row)
        self.hide_progress()

    # ---------------------------------------------------------------- message
    @property
    def value(self) -> str:
        """The message shown (its full text, also when elided)."""
        return self._message

    @value.setter
    def value(self, text: str) -> None:
        self.show_message(text)

    @property
    def details(self) -> str:
        """What "Details…" shows: the message and its details."""
        return "\n\n".join(part for part in (self._message, self._details) if part)

    def show_message(self, text: str, details: str = "") -> None:
        """Show ``text`` (its first line, elided to fit); ``details`` one click away."""
        text = str(text)
        self._message, self._details = text, str(details)
        first_line = text.splitlines()[0] if text else ""
        self.label.setText(first_line)
        self.label.setToolTip(self.details)
        self._sync_details_button()

    def _sync_details_button(self) -> None:
        shown = self.label.text()
        width = max(self.label.width(), 1)
        fits = self.label.fontMetrics().horizontalAdvance(shown) <= width
        self.details_button.setVisible(bool(self._details) or shown != self._message or not fits)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._sync_details_button()

    def open_details(self) -> QMessageBox:
        """Show the full message and its details in a message box (not modal)."""
        if self.details_box is not None:
            self.details_box.close()
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Information)
        box.setWindowTitle("Details")
        box.setText(self.details)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setModal(False)
        box.show()
        self.details_box = box
        return box

    # --------------------------------------------------------------- progress
    def show_progress(self, text: str, done: int, total: int) -> None:
        """Show ``text`` and a bar at ``done`` of ``total`` (0: busy, no count)."""
        self.step.setText(str(text))
        self.step.setToolTip(str(text))
        self.bar.setRange(0, max(int(total), 0))
        self.bar.setValue(min(max(int(done), 0), max(int(total), 0)))
        self.step.setVisible(True)
        self.bar.setVisible(True)

    def hide_progress(self) -> None:
        """Hide the progress row (a run ended)."""
        self.step.setText("")
        self.step.setVisible(False)
        self.bar.setVisible(False)

    @property
    def progress_text(self) -> str:
        """The progress line shown ("" when no run is in progress)."""
        return "" if self.bar.isHidden() else self.step.text()
