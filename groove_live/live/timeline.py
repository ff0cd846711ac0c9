"""The hand-off between the decode worker and the clock thread: decoded bars, by bar number."""
from __future__ import annotations

import threading

from .events import BarContent


class Timeline:
    """Bars the worker has decoded, waiting for the clock thread to take them.

    Once the clock thread has taken a bar it is fixed: the worker may replace any later bar
    (a request changes the plan from the next free bar on) but never a taken one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._bars: dict[int, BarContent] = {}
        self.taken_bar = -1  # the last bar the clock thread took
        self.changes = 0  # bumps on every take, so the worker knows to plan further

    def first_free_bar(self) -> int:
        with self._cond:
            return self.taken_bar + 1

    def published_through(self) -> int:
        """The last bar ready to play, or taken_bar when nothing is waiting."""
        with self._cond:
            bar = self.taken_bar
            while bar + 1 in self._bars:
                bar += 1
            return bar

    def publish(self, from_bar: int, contents: dict[int, BarContent], strict: bool) -> bool:
        """Replace bars >= from_bar with `contents`.

        strict: all or nothing — refused (False) when the clock already took `from_bar`, so a
        request that missed its bar is re-planned for the next one instead of starting in the
        middle of its phrase. Otherwise bars already taken are simply dropped.
        """
        with self._cond:
            if strict and from_bar <= self.taken_bar:
                return False
            for bar in [b for b in self._bars if b >= from_bar]:
                del self._bars[bar]
            for bar, content in contents.items():
                if bar > self.taken_bar:
                    self._bars[bar] = content
            return True

    def take(self, bar: int) -> BarContent | None:
        """The clock thread fixes `bar` (None: the worker did not deliver it in time)."""
        with self._cond:
            self.taken_bar = max(self.taken_bar, bar)
            for b in [b for b in self._bars if b < bar]:
                del self._bars[b]
            content = self._bars.pop(bar, None)
            self.changes += 1
            self._cond.notify_all()
            return content

    def wait_for_take(self, seen_changes: int, timeout_s: float) -> int:
        """Block until the clock takes a bar after `seen_changes` (or timeout); new count."""
        with self._cond:
            self._cond.wait_for(lambda: self.changes != seen_changes, timeout_s)
            return self.changes

    def wake(self) -> None:
        """Wake a waiting worker (a request arrived)."""
        with self._cond:
            self.changes += 1
            self._cond.notify_all()
