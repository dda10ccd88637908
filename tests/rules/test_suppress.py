"""Suppression windows: first alert passes, repeats are counted and reported at window close."""

from __future__ import annotations

from a2z.records import Alert, Severity
from a2z.rules.suppress import SuppressionSettings, Suppressor


def alert(ts: float, key: str = "k", rule: str = "r1", uid: str = "C1") -> Alert:
    return Alert(
        ts=ts, uid=uid, orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=80,
        rule_id=rule, title="t", severity=Severity.LOW, uids=[uid], dedup_key=key, msg="seen",
    )  # fmt: skip


def test_repeats_inside_window_are_counted_then_summarised_on_next_window() -> None:
    s = Suppressor(SuppressionSettings(window_s=60))
    assert s.admit(alert(100)) == [alert(100)]
    for i in range(5):
        assert s.admit(alert(110 + i, uid=f"C{i}")) == []
    out = s.admit(alert(200, uid="Cnew"))
    assert [a.count for a in out] == [5, 1]
    summary, fresh = out
    assert summary.uids == ["C0", "C1", "C2", "C3", "C4"]
    assert summary.msg == "seen; 5 repeats suppressed in the window"
    assert fresh.uids == ["Cnew"]
    assert s.stats.passed == 2
    assert s.stats.suppressed == 5
    assert s.stats.summaries == 1


def test_window_without_repeats_closes_silently() -> None:
    s = Suppressor(SuppressionSettings(window_s=60))
    s.admit(alert(100))
    assert s.expire(500) == []
    assert len(s) == 0


def test_expire_and_flush_report_counts() -> None:
    s = Suppressor(SuppressionSettings(window_s=60))
    s.admit(alert(100, key="a"))
    s.admit(alert(101, key="a"))
    s.admit(alert(150, key="b"))
    s.admit(alert(151, key="b"))
    s.admit(alert(152, key="b"))
    expired = s.expire(170)
    assert [(a.dedup_key, a.count) for a in expired] == [("a", 1)]
    assert [(a.dedup_key, a.count) for a in s.flush()] == [("b", 2)]
    assert len(s) == 0


def test_keys_are_per_tenant() -> None:
    s = Suppressor(SuppressionSettings(window_s=60))
    assert len(s.admit(alert(100), tenant="t1")) == 1
    assert len(s.admit(alert(101), tenant="t2")) == 1
    assert s.admit(alert(102), tenant="t1") == []


def test_windows_per_rule_and_per_tenant() -> None:
    settings = SuppressionSettings(
        window_s=60, rules={"noisy": 3600, "loud": 0}, tenants={"t9": {"*": 10, "noisy": 5}}
    )
    assert settings.window_for("t1", "r1") == 60
    assert settings.window_for("t1", "noisy") == 3600
    assert settings.window_for("t9", "noisy") == 5
    assert settings.window_for("t9", "r1") == 10
    s = Suppressor(settings)
    assert len(s.admit(alert(100, rule="loud"))) == 1
    assert len(s.admit(alert(100.1, rule="loud"))) == 1  # window 0: never suppressed
    s.admit(alert(100, rule="noisy", key="n"))
    assert s.admit(alert(3000, rule="noisy", key="n")) == []


def test_state_is_bounded_and_eviction_reports_the_count() -> None:
    s = Suppressor(SuppressionSettings(window_s=60, max_keys=3))
    s.admit(alert(100, key="k0"))
    s.admit(alert(101, key="k0"))  # one repeat of k0
    out: list[Alert] = []
    for i in range(1, 4):
        out.extend(s.admit(alert(102 + i, key=f"k{i}")))
    assert len(s) == 3
    assert s.stats.evictions == 1
    summaries = [a for a in out if a.count > 1 or a.dedup_key == "k0"]
    assert [(a.dedup_key, a.count) for a in summaries] == [("k0", 1)]
