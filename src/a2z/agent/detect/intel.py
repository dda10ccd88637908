"""The agent's copy of its tenant's threat intel: applied from the server's pushes, matched on
every record by the edge stage, kept on disk so a restart resumes it (ADR 12).

A push may come in several parts; nothing changes until the last one arrived and decoded.
The set then changes at once: a whole set is built aside and swapped in, a delta is applied
under the lock the record stream takes per match, so no record sees half a change.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import msgspec
import zstandard

from a2z.agent.identity import write_private
from a2z.records import Alert, Conn, Dns, Http, IntelPush, IntelResult, IntelWarnings, Ssl, Weird
from a2z.records.control import MAX_REASON_CHARS
from a2z.rules.intel import (
    DeltaError,
    IndicatorSet,
    IntelDelta,
    IntelMatcher,
    WarningList,
    apply,
    decode_delta,
    encode_delta,
    snapshot,
)
from a2z.rules.intel.delta import MAX_DELTA_BYTES
from a2z.rules.intel.matcher import IntelRecord
from a2z.rules.intel.store import DEFAULT_BENIGN_CIDRS, DEFAULT_BENIGN_DOMAINS
from a2z.rules.intel.transfer import join, unpack

log = logging.getLogger(__name__)

SET_FILE = "intel-set.msgpack.zst"  # the whole set at its version (a full IntelDelta)
WARNINGS_FILE = "intel-warnings.json"
INTEL_RECORDS = (Conn, Dns, Http, Ssl, Weird)


def _warning_list(pushed: IntelWarnings) -> WarningList:
    return WarningList(
        [*DEFAULT_BENIGN_CIDRS, *pushed.cidrs],
        [*DEFAULT_BENIGN_DOMAINS, *pushed.domains],
        pushed.values,
    )


class AgentIntel:
    """The indicator set the edge stage matches, and how pushes change it."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.indicators = IndicatorSet()
        self.warnings = IntelWarnings()
        self.matcher = IntelMatcher([self.indicators], _warning_list(self.warnings))
        self._lock = threading.Lock()  # held per match, and while a change is swapped in
        self._parts: list[IntelDelta] = []  # parts of the push being received

    @property
    def version(self) -> int:
        """The version of the set being matched (0: none yet)."""
        return self.indicators.version

    def match(self, record: IntelRecord) -> list[Alert]:
        """Alerts of the indicators the record holds."""
        with self._lock:
            return self.matcher.match(record)

    # -- pushes ------------------------------------------------------------------------------

    def receive(self, push: IntelPush) -> IntelResult | None:
        """Take one part; the result once the push is complete (applied or refused)."""
        if push.part == 0:
            self._parts = []
        elif push.part != len(self._parts):
            self._parts = []
            return self._refused(push, f"part {push.part} of {push.parts} came out of order")
        try:
            part = unpack(push.data)
        except DeltaError as exc:
            self._parts = []
            return self._refused(push, str(exc))
        if (part.version, part.full) != (push.version, push.full):
            self._parts = []
            return self._refused(push, "a part's delta does not match its message")
        self._parts.append(part)
        if push.part < push.parts - 1:
            return None
        parts, self._parts = self._parts, []
        try:
            self._apply(join(parts), push.warnings or IntelWarnings())
        except DeltaError as exc:
            return self._refused(push, str(exc))
        self.persist()
        log.info("intel set at version %d: %d indicators", self.version, len(self.indicators))
        return IntelResult(version=push.version, applied=True, intel_version=self.version)

    def _apply(self, delta: IntelDelta, warnings: IntelWarnings) -> None:
        matcher_warnings = _warning_list(warnings)
        if delta.full:
            fresh = IndicatorSet(delta.added, version=delta.version)  # built aside: seconds
            with self._lock:
                self.indicators = fresh
                self.matcher.sets = (fresh,)
                self.matcher.warnings = matcher_warnings
                self.warnings = warnings
            return
        with self._lock:  # DeltaVersionError leaves the set as it was
            apply(self.indicators, delta)
            self.matcher.warnings = matcher_warnings
            self.warnings = warnings

    def _refused(self, push: IntelPush, reason: str) -> IntelResult:
        log.warning("refused intel push to version %d: %s", push.version, reason)
        return IntelResult(
            version=push.version, applied=False, intel_version=self.version,
            reason=reason[:MAX_REASON_CHARS],
        )  # fmt: skip

    # -- persistence -------------------------------------------------------------------------

    def persist(self) -> None:
        """Write the set and warning list to the state directory (atomically, each)."""
        if self.state_dir is None:
            return
        with self._lock:
            whole = snapshot(self.indicators)
            warnings = self.warnings
        data = zstandard.ZstdCompressor(level=3).compress(encode_delta(whole))
        write_private(self.state_dir / SET_FILE, data)
        write_private(self.state_dir / WARNINGS_FILE, msgspec.json.encode(warnings))

    def resume(self) -> None:
        """Load the set kept by an earlier run; an unreadable one is ignored (the server then
        sends the whole set, since the agent reports version 0)."""
        if self.state_dir is None:
            return
        try:
            raw = (self.state_dir / SET_FILE).read_bytes()
            kept = decode_delta(
                zstandard.ZstdDecompressor().decompress(raw, max_output_size=MAX_DELTA_BYTES)
            )
            warnings = msgspec.json.decode(
                (self.state_dir / WARNINGS_FILE).read_bytes(), type=IntelWarnings
            )
        except FileNotFoundError:
            return
        except (OSError, zstandard.ZstdError, DeltaError, msgspec.DecodeError) as exc:
            log.warning("ignoring the kept intel set: %s", exc)
            return
        self._apply(kept, warnings)
        log.info("resumed intel set version %d (%d indicators)", self.version, len(self.indicators))
