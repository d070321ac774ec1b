"""The linking settings the SegEvery widget and the batch CLI expose, checked when made."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from napari_mobilesam.errors import InvalidValueError

__all__ = ["LinkOptions"]


@dataclass(frozen=True)
class LinkOptions:
    """Settings of :func:`napari_mobilesam.stacks.linking.link_slices` exposed in the widget
    and the CLI, checked when made (``link_slices`` checks its arguments with this class).

    Parameters
    ----------
    search_radius : float, optional
        Tracks: the farthest a cell may be from where its velocity puts it, in the layer's
        units (None: 3 median object radii).
    max_gap : int
        Slices an object may be missed on and keep its id.
    neck_ratio : float, optional
        3-D objects: cut a chain whose area falls below this fraction of the peaks on
        both sides (None: never).

    Examples
    --------
    >>> LinkOptions(max_gap=2).rules()
    {'search_radius': None, 'max_gap': 2, 'neck_ratio': 0.5}
    """

    search_radius: float | None = None
    max_gap: int = 1
    neck_ratio: float | None = 0.5

    def __post_init__(self) -> None:
        if self.search_radius is not None and not float(self.search_radius) > 0:
            raise InvalidValueError(
                f"search_radius must be > 0 (or None: 3 object radii), got {self.search_radius!r}"
            )
        if isinstance(self.max_gap, bool) or int(self.max_gap) != self.max_gap or self.max_gap < 0:
            raise InvalidValueError(f"max_gap must be an integer >= 0, got {self.max_gap!r}")
        if self.neck_ratio is not None and not 0.0 < float(self.neck_ratio) < 1.0:
            raise InvalidValueError(
                f"neck_ratio must be in (0, 1) (or None: never cut), got {self.neck_ratio!r}"
            )

    def rules(self) -> dict[str, Any]:
        """Keyword arguments of ``link_slices``."""
        return asdict(self)
