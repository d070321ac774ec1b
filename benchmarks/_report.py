"""Benchmark rows and their rendering as plain-text and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from _measure import Measurement

COLUMNS = (
    "row",
    "image",
    "ours ms",
    "peer ms",
    "peer",
    "speed-up (peer / ours)",
    "ours peak MiB",
    "peer peak MiB",
    "n",
    "note",
)
NUMERIC = {"ours ms", "peer ms", "speed-up (peer / ours)", "ours peak MiB", "peer peak MiB", "n"}


@dataclass(frozen=True)
class RowResult:
    """One line of a table: our workload against one peer on one image.

    ``peer`` is None when the peer was not run (``note`` says why).
    """

    row: str
    size: int
    ours: Measurement
    peer: Measurement | None
    peer_name: str
    note: str = ""

    @property
    def speedup(self) -> float | None:
        """Peer time over our time: above 1 means ours is faster."""
        if self.peer is None or self.ours.seconds <= 0:
            return None
        return self.peer.seconds / self.ours.seconds

    def cells(self) -> list[str]:
        peer = self.peer
        return [
            self.row,
            f"{self.size}²",
            _ms(self.ours.seconds),
            _ms(peer.seconds) if peer else "—",
            self.peer_name,
            f"{self.speedup:.2f}×" if self.speedup is not None else "—",
            f"{self.ours.peak_mib:,.0f}",
            f"{peer.peak_mib:,.0f}" if peer else "—",
            str(self.ours.repeats),
            self.note,
        ]


def _ms(seconds: float) -> str:
    milliseconds = seconds * 1e3
    return f"{milliseconds:,.1f}" if milliseconds < 100 else f"{milliseconds:,.0f}"


def text_table(rows: Sequence[RowResult]) -> str:
    """Fixed-width table for the terminal."""
    body = [row.cells() for row in rows]
    widths = [max(len(c) for c in column) for column in zip(COLUMNS, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if name in NUMERIC else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(COLUMNS), rule, *(line(cells) for cells in body)])


def markdown_table(rows: Sequence[RowResult]) -> str:
    """GitHub-flavoured Markdown table."""
    align = ["---:" if name in NUMERIC else "---" for name in COLUMNS]
    lines = [_md_line(COLUMNS), _md_line(align)]
    lines += [_md_line(row.cells()) for row in rows]
    return "\n".join(lines)


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
