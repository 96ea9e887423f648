"""One generic name -> object registry for methods, adapters, metrics and presets."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from moe_unlearn.errors import UserError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to entries; rejects duplicates and lists valid names on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            names = sorted(self._entries)
            raise UserError(
                f"unknown {self.kind} '{name}'{suggest(name, names)}; choose one of: {', '.join(names)}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
