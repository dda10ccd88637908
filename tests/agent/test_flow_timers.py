"""The flow table's timer lanes hand entries back in exactly a heap's (deadline, key) order."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from a2z.agent.flows.timers import FlowKey, Timers


def _key(port: int) -> FlowKey:
    return (6, bytes([10, 0, 0, 1]), port, bytes([10, 0, 0, 2]), 80, False)


# (push deadline offset and key port) or None for a pop; few distinct values, so ties and
# deadlines going backwards (entries that fit no lane) are common.
_STEPS = st.lists(
    st.one_of(
        st.none(), st.tuples(st.sampled_from([0.0, 1.0, 5.0, 60.0, 300.0]), st.integers(1, 6))
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(steps=_STEPS, drift=st.lists(st.floats(-2.0, 3.0), min_size=1, max_size=20))
def test_timers_pop_in_the_order_of_a_heap_of_deadline_key_tuples(
    steps: list[tuple[float, int] | None], drift: list[float]
) -> None:
    timers = Timers()
    heap: list[tuple[float, FlowKey]] = []
    now = 0.0
    for i, step in enumerate(steps):
        now += drift[i % len(drift)]  # packet time, mostly forwards, sometimes backwards
        if step is None:
            if heap:
                expected = heapq.heappop(heap)
                assert timers.next_due == expected[0]
                assert timers.pop() == expected[1]
            continue
        deadline = now + step[0]
        timers.push(deadline, _key(step[1]))
        heapq.heappush(heap, (deadline, _key(step[1])))
        assert len(timers) == len(heap)
        assert timers.next_due == heap[0][0]
    timers.retain(lambda when, key: key[2] % 2 == 0)
    heap = [entry for entry in heap if entry[1][2] % 2 == 0]
    heapq.heapify(heap)
    assert len(timers) == len(heap)
    while heap:
        expected = heapq.heappop(heap)
        assert timers.next_due == expected[0]
        assert timers.pop() == expected[1]
    assert timers.next_due == float("inf")
    assert len(timers) == 0


def test_many_lanes_overflow_into_the_heap_and_keep_the_order() -> None:
    timers = Timers()
    deadlines = [float(100 - i) for i in range(40)]  # strictly backwards: a lane each, then heap
    for i, deadline in enumerate(deadlines):
        timers.push(deadline, _key(i))
    popped = [timers.pop() for _ in deadlines]
    assert popped == [_key(i) for i in reversed(range(40))]
