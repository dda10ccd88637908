"""Web attacks seen in http records: attack-tool user agents (T1595) and path traversal (T1190).

Both look at one request at a time; their state is none (suppression de-duplicates repeats).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import ClassVar

from a2z.records import Alert, Http, Record, Severity
from a2z.rules.detections.base import DetectionInfo, DetectionStats, make_alert

# Substrings (lower case) of the User-Agent each tool sends by default -> the tool's name.
SCANNER_AGENTS: dict[str, str] = {
    "nmap scripting engine": "nmap NSE",
    "sqlmap": "sqlmap",
    "nikto": "Nikto",
    "masscan": "masscan",
    "zgrab": "ZGrab",
    "gobuster": "gobuster",
    "dirbuster": "DirBuster",
    "wfuzz": "wfuzz",
    "fuzz faster u fool": "ffuf",
    "nuclei": "Nuclei",
    "wpscan": "WPScan",
    "acunetix": "Acunetix",
    "netsparker": "Netsparker",
    "openvas": "OpenVAS",
    "w3af": "w3af",
    "hydra": "THC Hydra",
    "zmeu": "ZmEu",
    "morfeus": "Morfeus",
    "commix": "commix",
    "arachni": "Arachni",
    "skipfish": "skipfish",
    "whatweb": "WhatWeb",
    "jaeles": "Jaeles",
    "xsstrike": "XSStrike",
    "havij": "Havij",
    "feroxbuster": "feroxbuster",
    "dirb/": "DIRB",
}


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    """Tunables of the scanner user-agent detection (docs/detections.md)."""

    agents: tuple[tuple[str, str], ...] = tuple(SCANNER_AGENTS.items())  # (substring, tool)


class ScannerUserAgent:
    """A request whose User-Agent names a scanner or attack tool."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.web.scanner_ua", "Attack tool user agent", Severity.MEDIUM, ("T1595",)
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Http,)

    def __init__(self, settings: ScannerSettings | None = None) -> None:
        agents = dict((settings or ScannerSettings()).agents)
        self.stats = DetectionStats()
        self._tools = agents
        self._pattern = re.compile("|".join(re.escape(k.lower()) for k in agents))

    def observe(self, record: Record) -> list[Alert]:
        """Alert on a request from a known tool."""
        self.stats.records += 1
        if not isinstance(record, Http) or not record.user_agent:
            return []
        found = self._pattern.search(record.user_agent.lower())
        if found is None:
            return []
        tool = self._tools[found.group(0)]
        self.stats.alerts += 1
        msg = f"{tool} user agent: {record.user_agent[:200]}"
        key = (record.orig_h, record.resp_h, tool)
        return [make_alert(self.info, record, msg=msg, key=key)]


SENSITIVE_TARGETS = (
    "etc/passwd",
    "etc/shadow",
    "etc/hosts",
    "proc/self/",
    "win.ini",
    "boot.ini",
    "system32",
    "web-inf/web.xml",
    "web.config",
    ".ssh/",
)
_SEGMENT_SPLIT = re.compile(r"[/\\?&=;]")
# Overlong UTF-8 encodings of '/', '\' and '.' that old IIS and Tomcat decoded (CVE-2000-0884).
_OVERLONG = (
    (b"\xc0\xaf", b"/"),
    (b"\xe0\x80\xaf", b"/"),
    (b"\xc1\x9c", b"\\"),
    (b"\xc0\xae", b"."),
)


def decode_target(uri: str, rounds: int = 3) -> str:
    """The request target percent-decoded until stable (double encoding), overlongs folded."""
    text = uri
    for _ in range(rounds):
        raw = urllib.parse.unquote_to_bytes(text.replace("+", " "))
        for overlong, plain in _OVERLONG:
            raw = raw.replace(overlong, plain)
        decoded = raw.decode("latin-1")
        if decoded == text:
            break
        text = decoded
    return text


def traversal_depth(uri: str) -> int:
    """How many ``..`` path segments the decoded target holds (browsers never send one)."""
    return sum(1 for seg in _SEGMENT_SPLIT.split(decode_target(uri)) if seg.strip() == "..")


@dataclass(frozen=True, slots=True)
class TraversalSettings:
    """Tunables of the path traversal detection (docs/detections.md)."""

    min_depth: int = 2  # ``..`` segments needed when no sensitive file is named
    sensitive: tuple[str, ...] = SENSITIVE_TARGETS  # one ``..`` suffices with one of these


class PathTraversal:
    """A request target climbing out of the web root with ``..`` segments, however encoded."""

    info: ClassVar[DetectionInfo] = DetectionInfo(
        "a2z.web.traversal", "Web path traversal", Severity.HIGH, ("T1190", "T1083")
    )
    consumes: ClassVar[tuple[type[Record], ...]] = (Http,)

    def __init__(self, settings: TraversalSettings | None = None) -> None:
        self.settings = settings or TraversalSettings()
        self.stats = DetectionStats()

    def observe(self, record: Record) -> list[Alert]:
        """Alert on a target with enough ``..`` segments, or one aimed at a sensitive file."""
        self.stats.records += 1
        if not isinstance(record, Http) or not record.uri:
            return []
        depth = traversal_depth(record.uri)
        if depth == 0:
            return []
        target = decode_target(record.uri).lower().replace("\\", "/")
        sensitive = next((s for s in self.settings.sensitive if s in target), None)
        if depth < self.settings.min_depth and sensitive is None:
            return []
        self.stats.alerts += 1
        aimed = f", aiming at {sensitive}" if sensitive else ""
        msg = f"{depth} '..' segments in {record.uri[:200]}{aimed}"
        return [make_alert(self.info, record, msg=msg, key=(record.orig_h, record.resp_h))]
