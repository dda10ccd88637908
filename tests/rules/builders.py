"""Hand-made records and one-rule documents for the rules tests."""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from a2z.records import Conn, Dns, Http
from a2z.rules import CompiledRule, compile_yaml

_ENDS: dict[str, Any] = {
    "ts": 1795774712.5,
    "uid": "CtestUid0001",
    "orig_h": "10.66.0.10",
    "orig_p": 51000,
    "resp_h": "10.66.0.20",
    "resp_p": 80,
}


def http(**fields: Any) -> Http:
    """An Http record with plausible defaults; keyword arguments override them."""
    base: dict[str, Any] = {
        **_ENDS,
        "method": "GET",
        "host": "www.example.test",
        "uri": "/",
        "version": "1.1",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "status_code": 200,
        "status_msg": "OK",
    }
    return Http(**{**base, **fields})


def dns(**fields: Any) -> Dns:
    """A Dns record for www.example.test unless overridden."""
    base: dict[str, Any] = {
        **_ENDS,
        "resp_p": 53,
        "proto": "udp",
        "trans_id": 4242,
        "query": "www.example.test",
        "qtype_name": "A",
        "rcode_name": "NOERROR",
        "answers": ["10.66.0.20"],
    }
    return Dns(**{**base, **fields})


def conn(**fields: Any) -> Conn:
    """A finished TCP Conn record unless overridden."""
    return Conn(**{**_ENDS, "proto": "tcp", "conn_state": "SF", **fields})


def rule_yaml(
    detection: dict[str, Any],
    logsource: dict[str, str] | None = None,
    **meta: Any,
) -> str:
    """A one-rule Sigma document around ``detection``."""
    doc: dict[str, Any] = {
        "title": meta.pop("title", "test rule"),
        "id": meta.pop("id", str(uuid.uuid4())),
        "status": "test",
        "logsource": logsource or {"product": "zeek", "service": "http"},
        "detection": detection,
        "level": meta.pop("level", "high"),
        **meta,
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def rule(
    detection: dict[str, Any],
    logsource: dict[str, str] | None = None,
    **meta: Any,
) -> CompiledRule:
    """Compile a one-rule document (zeek http log source unless given)."""
    return compile_yaml(rule_yaml(detection, logsource, **meta))


def sel(condition: str = "selection", **selection: Any) -> dict[str, Any]:
    """A detection with one selection named ``selection``."""
    return {"selection": selection, "condition": condition}
