"""The flow table's timers: (deadline, flow key) entries handed back in that order.

Compiled by mypyc. A binary heap of tuples (``heapq``) did this before; its tuple comparisons
were about 6 % of an attack-mix replay (ADR 0006, update 3). Here entries sit in a few sorted
FIFO lanes: each timeout (attempt, close delay, inactivity) adds deadlines in packet-time order,
so an entry nearly always goes at the end of a lane, and the next one due is the smallest of a
few lane heads. Entries that fit no lane (timestamps going backwards) go to a heap, so the
order is exactly the heap's whatever the input.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Final

FlowKey = tuple[int, bytes, int, bytes, int, bool]
"""(ip proto, address, port, address, port, one_way); two-way keys list the lower end first."""

_MAX_LANES: Final = 8  # more lanes than timeouts only with time going backwards: heap beyond
_TRIM: Final = 1024  # popped entries a lane keeps before it drops its consumed prefix


class _Lane:
    """Entries in ascending (deadline, key) order, consumed from ``head``."""

    __slots__ = ("deadlines", "head", "keys")

    def __init__(self) -> None:
        self.deadlines: list[float] = []
        self.keys: list[FlowKey] = []
        self.head = 0  # index of the first entry not yet popped


class Timers:
    """A priority queue of (deadline, key), popped in ascending order (ties by key)."""

    __slots__ = ("_heap", "_lanes", "next_due", "size")

    def __init__(self) -> None:
        self._lanes: list[_Lane] = []
        self._heap: list[tuple[float, FlowKey]] = []  # entries that fit no lane
        self.next_due = math.inf  # the earliest deadline held (inf when empty)
        self.size = 0  # entries held

    def __len__(self) -> int:
        return self.size

    def push(self, deadline: float, key: FlowKey) -> None:
        """Add an entry."""
        self.size += 1
        if deadline < self.next_due:
            self.next_due = deadline
        # Best fit: the lane whose last entry is the latest one not after this entry.
        best: _Lane | None = None
        best_at = -math.inf
        empty: _Lane | None = None
        for lane in self._lanes:
            deadlines = lane.deadlines
            if lane.head == len(deadlines):
                if empty is None:
                    empty = lane
                continue
            last = deadlines[-1]
            fits = last < deadline or (last == deadline and lane.keys[-1] <= key)
            if fits and (last > best_at or best is None):
                best = lane
                best_at = last
        if best is None:
            best = empty
        if best is None:
            if len(self._lanes) >= _MAX_LANES:
                heapq.heappush(self._heap, (deadline, key))
                return
            best = _Lane()
            self._lanes.append(best)
        best.deadlines.append(deadline)
        best.keys.append(key)

    def pop(self) -> FlowKey:
        """Remove the smallest entry and return its key (its deadline was ``next_due``).

        Only call it when not empty.
        """
        lane_min: _Lane | None = None
        at = math.inf
        for lane in self._lanes:
            head = lane.head
            if head == len(lane.deadlines):
                continue
            deadline = lane.deadlines[head]
            if (
                lane_min is None
                or deadline < at
                or (deadline == at and lane.keys[head] < lane_min.keys[lane_min.head])
            ):
                lane_min = lane
                at = deadline
        heap = self._heap
        if heap and (
            lane_min is None
            or heap[0][0] < at
            or (heap[0][0] == at and heap[0][1] < lane_min.keys[lane_min.head])
        ):
            key = heapq.heappop(heap)[1]
        else:
            assert lane_min is not None, "pop from empty timers"
            head = lane_min.head
            key = lane_min.keys[head]
            head += 1
            if head == len(lane_min.deadlines):
                lane_min.deadlines.clear()
                lane_min.keys.clear()
                head = 0
            elif head >= _TRIM and head * 2 >= len(lane_min.deadlines):
                del lane_min.deadlines[:head]
                del lane_min.keys[:head]
                head = 0
            lane_min.head = head
        self.size -= 1
        self._update_next_due()
        return key

    def retain(self, live: Callable[[float, FlowKey], bool]) -> None:
        """Keep only the entries ``live`` accepts (order unchanged)."""
        for lane in self._lanes:
            deadlines: list[float] = []
            keys: list[FlowKey] = []
            for i in range(lane.head, len(lane.deadlines)):
                deadline = lane.deadlines[i]
                key = lane.keys[i]
                if live(deadline, key):
                    deadlines.append(deadline)
                    keys.append(key)
            lane.deadlines = deadlines
            lane.keys = keys
            lane.head = 0
        heap = [entry for entry in self._heap if live(entry[0], entry[1])]
        heapq.heapify(heap)
        self._heap = heap
        self.size = len(heap) + sum(len(lane.deadlines) for lane in self._lanes)
        self._update_next_due()

    def clear(self) -> None:
        """Drop every entry."""
        self._lanes = []
        self._heap = []
        self.next_due = math.inf
        self.size = 0

    def _update_next_due(self) -> None:
        due = self._heap[0][0] if self._heap else math.inf
        for lane in self._lanes:
            if lane.head < len(lane.deadlines):
                deadline = lane.deadlines[lane.head]
                if deadline < due:
                    due = deadline
        self.next_due = due


__all__ = ["FlowKey", "Timers"]
