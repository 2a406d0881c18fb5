"""Variables held in memory: windows are copied straight out of the array."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar

from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ._base import Source

__all__ = ["InMemorySource"]


class InMemorySource(Source):
    """A numpy array held in memory; windows are gathered straight from it."""

    in_memory: ClassVar[bool] = True

    def __init__(self, key: Hashable, array: NDArray[Any]) -> None:
        self.key = key
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.bounds = None
        self._views: dict[tuple[int, ...], NDArray[Any]] = {}

    def read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return self.array[region]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_views"] = {}  # strided views would pickle as full copies
        return state

    def windows_view(self, lengths: tuple[int, ...]) -> NDArray[Any]:
        view = self._views.get(lengths)
        if view is None:
            view = (
                sliding_window_view(self.array, lengths)
                if self.array.ndim
                else self.array
            )
            self._views[lengths] = view
        return view
