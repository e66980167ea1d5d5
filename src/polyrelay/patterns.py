"""Model-name patterns: exact names plus shell-style wildcards such as ``gpt-4-gizmo-*``."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

_WILDCARD_CHARS = frozenset("*?[")


def is_wildcard(name: str) -> bool:
    return not _WILDCARD_CHARS.isdisjoint(name)


class ModelPatterns:
    """Answers "does this list admit model X" with a set lookup for the common exact case."""

    __slots__ = ("exact", "wildcards")

    def __init__(self, names: Iterable[str]) -> None:
        names = list(names)
        self.exact = frozenset(n for n in names if not is_wildcard(n))
        self.wildcards = tuple(n for n in names if is_wildcard(n))

    def __contains__(self, model: str) -> bool:
        return model in self.exact or any(fnmatchcase(model, w) for w in self.wildcards)

    def __bool__(self) -> bool:
        return bool(self.exact or self.wildcards)
