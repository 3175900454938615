"""Which listed images the exporter keeps: repo and tag regexes, newest tags, a hard bound.

Like kube-state-metrics' allow and deny lists, applied per account to every image list
(``accounts[].images`` in the config), in this order, each image counted once under the first
rule that drops it::

    repo_filter   repo_include / repo_exclude, matched against "namespace/repo" (or "repo")
    tag_filter    tag_include / tag_exclude, matched against the tag
    newest_tags   beyond the N newest images (by creation time) of each repository
    max_images    beyond the hard bound of the source, newest images kept first

Patterns are Python regular expressions that must match the whole string. What was dropped
shows in ``imagesec_images_skipped{reason}``: truncation is never silent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from exporter.metrics import SKIP_REASONS

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listed:
    """What the filters read of a listed image."""

    namespace: str
    repo: str
    tag: str
    created: float | None  # Unix seconds; None sorts as the oldest
    image_id: str = ""  # breaks ties, so the choice is stable


def repo_path(namespace: str, repo: str) -> str:
    """The string repo patterns match: ``namespace/repo``, or ``repo`` without a namespace."""
    return f"{namespace}/{repo}" if namespace else repo


class ImageFilter:
    """The compiled filters of one account; ``apply`` is pure, so any source may share it."""

    def __init__(
        self,
        *,
        repo_include: Sequence[str] = (),
        repo_exclude: Sequence[str] = (),
        tag_include: Sequence[str] = (),
        tag_exclude: Sequence[str] = (),
        newest_tags: int | None = None,
        max_images: int | None = None,
    ) -> None:
        self._repo = _Patterns(repo_include, repo_exclude)
        self._tag = _Patterns(tag_include, tag_exclude)
        self.newest_tags = newest_tags
        self.max_images = max_images

    def apply(
        self, rows: Sequence[T], describe: Callable[[T], Listed], *, rank: bool = True
    ) -> tuple[list[T], tuple[tuple[str, int], ...]]:
        """The rows kept (in their order) and the skipped counts by reason (every reason).

        ``rank=False`` leaves out ``newest_tags`` (for lists without creation times).
        """
        if self.keeps_all(len(rows)):  # no object per row for a walk nothing can drop
            return list(rows), tuple((r, 0) for r in SKIP_REASONS)
        skipped: Counter[str] = Counter()
        kept: list[tuple[T, Listed]] = []
        for row in rows:
            listed = describe(row)
            if not self._repo.allows(repo_path(listed.namespace, listed.repo)):
                skipped["repo_filter"] += 1
            elif not self._tag.allows(listed.tag):
                skipped["tag_filter"] += 1
            else:
                kept.append((row, listed))
        if rank and self.newest_tags is not None:
            by_repo: dict[tuple[str, str], list[tuple[T, Listed]]] = {}
            for item in kept:
                by_repo.setdefault((item[1].namespace, item[1].repo), []).append(item)
            allowed: set[int] = set()
            for items in by_repo.values():
                items.sort(key=_newest_first)
                allowed.update(id(row) for row, _ in items[: self.newest_tags])
            skipped["newest_tags"] = len(kept) - len(allowed)
            kept = [item for item in kept if id(item[0]) in allowed]
        if self.max_images is not None and len(kept) > self.max_images:
            chosen = {id(row) for row, _ in sorted(kept, key=_newest_first)[: self.max_images]}
            skipped["max_images"] = len(kept) - self.max_images
            kept = [item for item in kept if id(item[0]) in chosen]
        return [row for row, _ in kept], tuple((r, skipped[r]) for r in SKIP_REASONS)

    def keeps_all(self, rows: int) -> bool:
        """Whether these filters keep every one of ``rows`` listed images whatever they are."""
        return (
            not self._repo
            and not self._tag
            and self.newest_tags is None
            and (self.max_images is None or rows <= self.max_images)
        )

    def allows(self, namespace: str, repo: str, tag: str) -> bool:
        """Whether the repo and tag patterns keep an image (rows outside an inventory)."""
        return self._repo.allows(repo_path(namespace, repo)) and self._tag.allows(tag)


def _newest_first(item: tuple[object, Listed]) -> tuple[float, str, str, str, str]:
    listed = item[1]
    created = listed.created if listed.created is not None else float("-inf")
    return (-created, listed.namespace, listed.repo, listed.tag, listed.image_id)


class _Patterns:
    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = [re.compile(p) for p in include]
        self._exclude = [re.compile(p) for p in exclude]

    def __bool__(self) -> bool:
        return bool(self._include or self._exclude)

    def allows(self, value: str) -> bool:
        if self._include and not any(p.fullmatch(value) for p in self._include):
            return False
        return not any(p.fullmatch(value) for p in self._exclude)


NO_FILTER = ImageFilter()
"""Keeps every image (tests and callers without a config)."""
