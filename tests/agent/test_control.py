"""The agent's control path without a server: validating, applying and rolling back pushed
configurations, and running commands once each with bounded diagnostics."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import msgspec
import pytest

from a2z.agent.commands import CommandRunner, diagnostics_bundle
from a2z.agent.control import STATE_FILE, AgentRuntime, LogRing
from a2z.agent.detect import EdgeDetector, load_rules
from a2z.agent.ship.channel import ShipStats
from a2z.records import AgentSettings, Command, CommandResult, ConfigPush, ConfigResult, Dns, Http
from a2z.records.control import MAX_RESULT_BYTES


class FakeCapture:
    """Stands in for LiveCapture: compiles with libpcap for real, records what was attached."""

    def __init__(self) -> None:
        self.bpf = ""
        self.attached: list[str] = []
        self.restarts = 0

    def check_filter(self, bpf: str) -> None:
        from a2z.agent.capture.bpf import compile_bpf

        compile_bpf(bpf, 1)

    def set_filter(self, bpf: str) -> None:
        self.attached.append(bpf)
        self.bpf = bpf


class BrokenSpool:
    """A spool whose resize fails (e.g. its disk went away)."""

    def resize(self, max_bytes: int) -> None:
        raise OSError(5, "Input/output error")


def runtime(tmp_path: Path, **kwargs: object) -> AgentRuntime:
    return AgentRuntime(state_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_apply_tunes_every_part_and_persists(tmp_path: Path) -> None:
    applied: list[int] = []
    capture = FakeCapture()
    rt = runtime(tmp_path, capture=capture, on_applied=applied.append)
    new = AgentSettings(bpf="tcp port 80", batch_size=7, batch_max_wait_s=0.2, protocols=["dns"])
    assert rt.apply(3, new) == ConfigResult(version=3, applied=True)
    assert capture.attached == ["tcp port 80"]
    assert (rt.limits.size, rt.limits.max_wait_s) == (7, 0.2)
    assert rt.keeps(
        Dns(ts=0, uid="C", orig_h="a", orig_p=1, resp_h="b", resp_p=53, proto="udp", trans_id=1)
    )
    assert not rt.keeps(Http(ts=0, uid="C", orig_h="a", orig_p=1, resp_h="b", resp_p=80))
    assert applied == [3]
    resumed = runtime(tmp_path, capture=FakeCapture())
    resumed.resume()
    assert (resumed.version, resumed.settings) == (3, new)
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_filter_that_does_not_compile_is_rejected_and_nothing_changes(tmp_path: Path) -> None:
    capture = FakeCapture()
    rt = runtime(tmp_path, capture=capture)
    result = rt.apply(2, AgentSettings(bpf="udp and dst port 99999", batch_size=9))
    assert not result.applied
    assert "99999" in result.reason
    assert capture.attached == [] and capture.bpf == ""
    assert rt.limits.size == 500 and rt.version == 0
    assert not (tmp_path / STATE_FILE).exists()


def test_a_part_failing_rolls_back_the_parts_already_applied(tmp_path: Path) -> None:
    capture = FakeCapture()
    rt = runtime(tmp_path, capture=capture, spool=BrokenSpool())
    result = rt.apply(2, AgentSettings(bpf="tcp", batch_size=20))
    assert not result.applied
    assert "rolled back" in result.reason and "Input/output" in result.reason
    assert capture.attached == ["tcp", ""]  # the new filter, then the old one (none) again
    assert rt.limits.size == 500  # limits were applied, then put back
    assert rt.version == 0


def test_invalid_push_and_command_are_answered_with_the_reason(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    bad_config = '{"type":"config","version":5,"config":{"batch_size":0}}'
    answer = msgspec.json.decode(asyncio.run(rt.handle(bad_config)) or "", type=ConfigResult)
    assert (answer.version, answer.applied) == (5, False)
    assert "batch_size" in answer.reason
    bad_command = '{"type":"command","id":"c1","kind":"format-disk"}'
    result = msgspec.json.decode(asyncio.run(rt.handle(bad_command)) or "", type=CommandResult)
    assert (result.id, result.ok) == ("c1", False)
    assert "format-disk" in result.error
    assert asyncio.run(rt.handle("not json")) is None
    good = msgspec.json.encode(ConfigPush(version=6, config=AgentSettings(batch_size=3))).decode()
    assert msgspec.json.decode(asyncio.run(rt.handle(good)) or "", type=ConfigResult).applied


def test_a_command_runs_once_and_is_re_answered_across_restarts(tmp_path: Path) -> None:
    rt = runtime(tmp_path, capture=None)
    runner = CommandRunner(rt)
    push = Command(id="c-1", kind="set-config", args={"version": 4, "config": {"batch_size": 11}})
    first = asyncio.run(runner(push))
    assert first.ok and first.result == {"version": 4, "applied": True}
    rt.limits.size = 99  # anything the command did is not redone on redelivery
    assert asyncio.run(runner(push)) == first
    assert rt.limits.size == 99
    again = CommandRunner(runtime(tmp_path))  # a restarted agent remembers the answer
    assert asyncio.run(again(push)) == first
    restart = asyncio.run(runner(Command(id="c-2", kind="restart-capture")))
    assert not restart.ok and "not capturing" in restart.error
    rules = asyncio.run(runner(Command(id="c-3", kind="reload-rules")))
    assert not rules.ok and "edge detection is off" in rules.error


def sigma(title: str, uri: str) -> str:
    return (
        f"title: {title}\nid: {uuid.uuid4()}\nlogsource:\n  category: webserver\n"
        f"detection:\n  selection:\n    cs-uri-query|contains: '{uri}'\n"
        "  condition: selection\nlevel: high\n"
    )


def test_reload_rules_rereads_the_rule_paths_and_keeps_the_old_set_on_error(
    tmp_path: Path,
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.yml").write_text(sigma("First", "/first"))
    detector = EdgeDetector(rules=load_rules([rules_dir])[0], rule_paths=[rules_dir])
    runner = CommandRunner(runtime(tmp_path / "state"), detector=detector)
    probe = Http(
        ts=1.0, uid="C1", orig_h="10.0.0.1", orig_p=40000, resp_h="10.0.0.2", resp_p=80,
        method="GET", host="h", uri="/second?x=1", status_code=200,
    )  # fmt: skip
    assert detector.rules is not None and detector.rules.match(probe) == []

    (rules_dir / "b.yml").write_text(sigma("Second", "/second"))
    (rules_dir / "broken.yml").write_text("title: [unclosed")
    done = asyncio.run(runner(Command(id="r-1", kind="reload-rules")))
    assert done.ok and done.result is not None
    assert done.result["rules"] == 2 and done.result["error_count"] == 1
    assert [a.title for a in detector.rules.match(probe)] == ["Second"]

    kept = detector.rules
    detector.rule_paths = (tmp_path / "gone.yml",)
    failed = asyncio.run(runner(Command(id="r-2", kind="reload-rules")))
    assert not failed.ok and "cannot read rules" in failed.error
    assert detector.rules is kept  # the old set keeps running


@pytest.mark.parametrize("limit", [4096, MAX_RESULT_BYTES])
def test_diagnostics_bundle_is_bounded(tmp_path: Path, limit: int) -> None:
    logs = LogRing(lines=1000, line_chars=2000)
    logger = logging.getLogger("a2z.test.diagnostics")
    logger.addHandler(logs)
    try:
        for i in range(1000):
            logger.warning("line %d %s", i, "y" * 1500)
    finally:
        logger.removeHandler(logs)
    rt = runtime(tmp_path)
    bundle = diagnostics_bundle(rt, ShipStats(), logs, limit)
    size = len(msgspec.json.encode(bundle))
    assert size <= limit
    assert bundle["logs_truncated"] is True
    assert bundle["version"] and bundle["config"]["batch_size"] == 500
    if limit == MAX_RESULT_BYTES:
        assert size > limit - 4000  # only what had to go went
        assert bundle["logs"][-1].endswith("y" * 20) and "line 999" in bundle["logs"][-1]
