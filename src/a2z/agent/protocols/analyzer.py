"""What every per-flow protocol analyzer shares: the flow's identity, its settings, its output.

Analyzers are sans-IO: the session feeds them bytes, they append finished records and weird
conditions to lists the pipeline drains after each packet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from a2z.agent.protocols.errors import MalformedMessage, ProtocolError
from a2z.records import Record


class FlowIdent(NamedTuple):
    """The Zeek connection id every record about one flow carries."""

    uid: str  # flow uid
    orig_h: str  # originator address, printed
    orig_p: int  # originator port
    resp_h: str  # responder address, printed
    resp_p: int  # responder port


SERVICES: tuple[str, ...] = ("dns", "ftp", "http", "ssl")  # every analyzer's service name


class AnalyzerSwitch:
    """Which application analyzers run: the ones configured on, less the ones shed for load.

    One per pipeline, shared by its sessions and switched live by the control path (and the
    resource governor) from another thread: each change assigns a new frozenset, so a session
    sees the old set or the new one whole. A flow whose protocol is off is not parsed at all
    (its conn record is still written, without that ``service``); the counters say how often.
    """

    __slots__ = ("_configured", "_shed", "enabled", "shed_flows", "skipped")

    def __init__(self, configured: Iterable[str] = SERVICES) -> None:
        self._configured = frozenset(configured)
        self._shed: frozenset[str] = frozenset()
        self.enabled = self._configured  # what sessions read: configured minus shed
        self.skipped: dict[str, int] = {}  # flows not (or no longer) analysed: configured off
        self.shed_flows: dict[str, int] = {}  # flows not (or no longer) analysed: shed for load

    def configure(self, services: Iterable[str]) -> None:
        """The services the configuration turns on."""
        self._configured = frozenset(services)
        self.enabled = self._configured - self._shed

    def shed(self, services: Iterable[str]) -> None:
        """Services to turn off for load, whatever the configuration says (empty: none)."""
        self._shed = frozenset(services)
        self.enabled = self._configured - self._shed

    @property
    def configured(self) -> frozenset[str]:
        """The services the configuration turns on."""
        return self._configured

    @property
    def shedding(self) -> frozenset[str]:
        """The configured services currently shed for load."""
        return self._configured & self._shed

    def passed_over(self, service: str) -> None:
        """Count one flow left unanalysed because ``service`` is off (pipeline thread only)."""
        counter = self.skipped if service not in self._configured else self.shed_flows
        counter[service] = counter.get(service, 0) + 1


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Tunables of the application analyzers; each bound caps memory per flow."""

    capture_password: bool = False  # HTTP Basic-auth passwords in http records (Zeek's default)
    max_header_bytes: int = 16384  # HTTP header block held while waiting for its end
    max_reorder_bytes: int = 65536  # out-of-order TCP bytes held per direction
    max_handshake_bytes: int = 65536  # one TLS handshake message held for parsing
    max_pending_requests: int = 100  # HTTP requests awaiting replies (Zeek's limit)
    max_pending_dns: int = 50  # DNS transaction ids awaiting a match (Zeek's limit)
    max_probe_bytes: int = 512  # first payload bytes held while deciding the service
    # Shared, not copied: the control path flips analyzers on and off while the pipeline runs.
    analyzers: AnalyzerSwitch = field(default_factory=AnalyzerSwitch, compare=False)


class Analyzer:
    """Base of the per-flow analyzers: records and weirds out, ``done`` when nothing is left."""

    __slots__ = ("config", "confirmed", "done", "ident", "records", "weirds")

    service: ClassVar[str] = ""  # the Zeek service name this analyzer confirms (dns, http, ssl)

    def __init__(
        self,
        ident: FlowIdent,
        config: ProtocolConfig,
        records: list[Record] | None = None,
        weirds: list[ProtocolError] | None = None,
    ) -> None:
        self.ident = ident
        self.config = config
        # Finished records and weird conditions, drained by the pipeline; a session passes
        # its own lists so nothing needs moving (and a flow carries two lists, not four).
        self.records: list[Record] = [] if records is None else records
        self.weirds: list[ProtocolError] = [] if weirds is None else weirds
        self.confirmed = False  # the content parsed as this protocol at least once
        self.done = False  # nothing more to learn: the pipeline may stop feeding payload

    def weird(self, name: str, detail: str = "") -> None:
        """Note a protocol anomaly (becomes a weird record)."""
        self.weirds.append(MalformedMessage(self.service.upper(), name, detail))

    def report(self, exc: ProtocolError) -> None:
        """Note a parse error raised by one of the pure parsers."""
        self.weirds.append(exc)


__all__ = ["SERVICES", "Analyzer", "AnalyzerSwitch", "FlowIdent", "ProtocolConfig"]
