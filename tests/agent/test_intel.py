"""The agent's threat intel without a server: pushes in parts, applied whole or not at all,
matched by the edge stage, kept across restarts, and refused with a reason when wrong."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import msgspec

from a2z.agent.control import AgentRuntime
from a2z.agent.detect import EdgeDetector
from a2z.agent.detect.intel import SET_FILE, AgentIntel
from a2z.records import Conn, IntelPush, IntelResult, IntelWarnings
from a2z.rules.intel import IndicatorKey, IndicatorType, IntelDelta, make
from a2z.rules.intel.transfer import join, pack, split, unpack

T0 = 1_750_000_000.0


def conn(resp_h: str, uid: str = "C1") -> Conn:
    return Conn(
        ts=T0, uid=uid, orig_h="10.0.0.5", orig_p=40000, resp_h=resp_h, resp_p=443, proto="tcp"
    )


def addresses(n: int, start: int = 0) -> list[object]:
    return [
        make(IndicatorType.IP, f"198.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", source="f")
        for i in range(start, start + n)
    ]


def pushes(delta: IntelDelta, part_bytes: int = 1 << 20, **warnings: list[str]) -> list[IntelPush]:
    cut = split(delta, part_bytes)
    return [
        IntelPush(
            version=delta.version,
            base=delta.base,
            full=delta.full,
            part=n,
            parts=len(cut),
            data=pack(p),
            warnings=IntelWarnings(**warnings) if n == len(cut) - 1 else None,
        )
        for n, p in enumerate(cut)
    ]


def send(intel: AgentIntel, messages: list[IntelPush]) -> IntelResult | None:
    answers = [intel.receive(m) for m in messages]
    assert all(a is None for a in answers[:-1])
    return answers[-1]


def test_split_and_join_are_inverse_and_parts_stay_small() -> None:
    delta = IntelDelta(
        base=3, version=4, added=addresses(5_000),  # type: ignore[arg-type]
        removed=[IndicatorKey(IndicatorType.DOMAIN, "x.example", "f")],
    )  # fmt: skip
    parts = split(delta, part_bytes=16_384)
    assert len(parts) > 5
    assert all(len(pack(p)) < 16_384 for p in parts)
    assert join([unpack(pack(p)) for p in parts]) == delta


def test_a_push_in_parts_applies_only_at_its_last_part_then_matches() -> None:
    intel = AgentIntel()
    edge = EdgeDetector(intel=intel)
    full = IntelDelta(base=0, version=7, full=True, added=addresses(3_000))  # type: ignore[arg-type]
    messages = pushes(full, part_bytes=8_192)
    assert len(messages) > 3
    for message in messages[:-1]:
        assert intel.receive(message) is None
        assert intel.version == 0 and edge.process(conn("198.0.0.1")) == []
    result = intel.receive(messages[-1])
    assert result == IntelResult(version=7, applied=True, intel_version=7)
    [alert] = edge.process(conn("198.0.0.1"))
    assert alert.rule_id == "a2z-intel-ip" and alert.attack == ["T1071"]


def test_deltas_change_the_set_and_a_wrong_base_is_refused_unchanged() -> None:
    intel = AgentIntel()
    send(intel, pushes(IntelDelta(base=0, version=1, full=True, added=addresses(2))))  # type: ignore[arg-type]
    removal = IntelDelta(
        base=1, version=2, removed=[IndicatorKey(IndicatorType.IP, "198.0.0.0", "f")]
    )
    assert send(intel, pushes(removal)) == IntelResult(version=2, applied=True, intel_version=2)
    assert len(intel.indicators) == 1
    stale = IntelDelta(base=1, version=3, added=addresses(1, start=50))  # type: ignore[arg-type]
    refused = send(intel, pushes(stale))
    assert refused is not None and not refused.applied and refused.intel_version == 2
    assert "version 1" in refused.reason and len(intel.indicators) == 1


def test_bad_parts_are_refused_with_a_reason() -> None:
    intel = AgentIntel()
    good = pushes(IntelDelta(base=0, version=5, full=True, added=addresses(2_000)), 8_192)  # type: ignore[arg-type]
    out_of_order = intel.receive(good[1])
    assert out_of_order is not None and "out of order" in out_of_order.reason
    garbage = msgspec.structs.replace(good[0], data="bm90IHpzdGQ=")
    bad = intel.receive(garbage)
    assert bad is not None and not bad.applied and "undecodable" in bad.reason
    assert intel.version == 0


def test_the_set_and_warning_list_survive_a_restart(tmp_path: Path) -> None:
    intel = AgentIntel(tmp_path)
    full = IntelDelta(base=0, version=9, full=True, added=addresses(10))  # type: ignore[arg-type]
    send(intel, pushes(full, cidrs=["198.0.0.0/30"]))
    again = AgentIntel(tmp_path)
    again.resume()
    assert again.version == 9 and len(again.indicators) == 10
    assert again.match(conn("198.0.0.1")) == []  # warning-listed
    assert len(again.match(conn("198.0.0.9"))) == 1
    (tmp_path / SET_FILE).write_bytes(b"broken")
    broken = AgentIntel(tmp_path)
    broken.resume()  # ignored: the server sends the whole set to a version-0 agent
    assert broken.version == 0


def test_matching_never_sees_half_a_delta() -> None:
    intel = AgentIntel()
    first = addresses(20_000)
    send(intel, pushes(IntelDelta(base=0, version=1, full=True, added=first)))  # type: ignore[arg-type]
    swap = IntelDelta(
        base=1, version=2, added=addresses(20_000, start=100_000),  # type: ignore[arg-type]
        removed=[IndicatorKey(i.type, i.value, i.source) for i in first],  # type: ignore[attr-defined]
    )  # fmt: skip
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with intel._lock:  # what a match sees: the whole set at one version
                seen.add(len(intel.indicators))

    watcher = threading.Thread(target=watch)
    watcher.start()
    send(intel, pushes(swap))
    done.set()
    watcher.join()
    assert seen <= {20_000}


def test_runtime_answers_intel_pushes_and_refuses_unreadable_ones() -> None:
    runtime = AgentRuntime(intel=AgentIntel())
    [push] = pushes(IntelDelta(base=0, version=4, full=True, added=addresses(1)))  # type: ignore[arg-type]
    answer = asyncio.run(runtime.handle(msgspec.json.encode(push).decode()))
    assert answer is not None and msgspec.json.decode(answer)["applied"] is True
    bad = '{"type": "intel", "version": 5, "base": 4, "full": false, "part": 0, "parts": 0}'
    refused = asyncio.run(runtime.handle(bad))
    assert refused is not None
    decoded = msgspec.json.decode(refused)
    assert decoded["type"] == "intel_result" and not decoded["applied"]
    assert decoded["intel_version"] == 4 and "invalid intel push" in decoded["reason"]
