"""One generic name -> object registry for methods, adapters, metrics and presets.

A registry given a `package` discovers its entries itself: on first lookup it imports every
module of that package, and each module registers what it defines. Adding a method, adapter
or metric is therefore one new file; no list of modules is kept anywhere.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from moe_unlearn.errors import UserError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to entries; rejects duplicates and lists valid names on a miss."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = package is None
        self._discovering = False

    def _discover(self) -> None:
        """Import every module of `package` once (they register themselves); import errors propagate."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
            self._discovered = True
        finally:
            self._discovering = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            names = sorted(self._entries)
            raise UserError(
                f"unknown {self.kind} '{name}'{suggest(name, names)}; choose one of: {', '.join(names)}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
