"""Exclusive-time attribution for a run of library code, by wrapping chosen functions.

``Profiler.wrap(owner, name, label)`` replaces ``owner.name`` with a wrapper that times
each call. Times are exclusive: a wrapped call made inside another wrapped call is
subtracted from the outer one, so the labels add up to no more than the wall time and
the remainder is "not attributed". A label marked ``absorb`` swallows the wrapped calls
made inside it (they count as its own time). Only this process is affected; the library
files are not modified.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import Counter, defaultdict
from typing import Any


class Profiler:
    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [label, time in wrapped children, absorbs]
        self.exclusive: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def _enter(self, label: str, absorb: bool) -> list[Any] | None:
        if self.stack and self.stack[-1][2]:
            return None
        frame = [label, 0.0, absorb, time.perf_counter()]
        self.stack.append(frame)
        return frame

    def _exit(self, frame: list[Any] | None) -> None:
        if frame is None:
            return
        self.stack.pop()
        elapsed = time.perf_counter() - frame[3]
        self.exclusive[frame[0]] += elapsed - frame[1]
        self.calls[frame[0]] += 1
        if self.stack:
            self.stack[-1][1] += elapsed

    def wrap(self, owner: Any, name: str, label: str, absorb: bool = False) -> None:
        original = getattr(owner, name)
        profiler = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = profiler._enter(label, absorb)
            try:
                return original(*args, **kwargs)
            finally:
                profiler._exit(frame)

        setattr(owner, name, wrapper)

    def wrap_generator(self, owner: Any, name: str, label: str) -> None:
        """Time the body of a generator function, one ``next()`` at a time."""
        original = getattr(owner, name)
        profiler = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any):
            source = original(*args, **kwargs)
            while True:
                frame = profiler._enter(label, False)
                try:
                    item = next(source)
                except StopIteration:
                    return
                finally:
                    profiler._exit(frame)
                yield item

        setattr(owner, name, wrapper)

    def wrap_public_methods(self, cls: type, label: str) -> int:
        """Wrap every public plain method defined on ``cls``; returns how many."""
        count = 0
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                self.wrap(cls, name, label)
                count += 1
        return count

    def table(self) -> dict[str, dict[str, float]]:
        return {k: {"seconds": v, "calls": self.calls[k]} for k, v in self.exclusive.items()}
