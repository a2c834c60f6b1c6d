"""Torch module containers typed by the class of their items.

``ModuleList[EncoderLayer]`` is :class:`torch.nn.ModuleList` at run time (same class, state
dict and repr); to the type checker, iterating it or indexing it with an int gives an
``EncoderLayer``, so the blocks' own methods (counting, pruning) type-check where they are
called. ``torch.nn.ModuleList`` itself is not generic: its items are plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

if TYPE_CHECKING:

    class ModuleList(nn.ModuleList, Generic[ModuleT]):
        """A :class:`torch.nn.ModuleList` whose items are all ``ModuleT``."""

        def __init__(self, modules: Iterable[ModuleT] | None = None) -> None: ...

        def __iter__(self) -> Iterator[ModuleT]: ...

        @overload
        def __getitem__(self, idx: slice) -> ModuleList[ModuleT]: ...

        @overload
        def __getitem__(self, idx: int) -> ModuleT: ...

        def __getitem__(self, idx: int | slice) -> ModuleT | ModuleList[ModuleT]: ...

else:
    ModuleList = nn.ModuleList

__all__ = ["ModuleList"]
