"""Typed event records shared by agent and server, and the wire envelope that carries them.

This package is a leaf: it imports nothing else from ``a2z``.
"""

from a2z.records.alert import Alert, Severity
from a2z.records.control import (
    MAX_CONTROL_BYTES,
    MAX_RESULT_BYTES,
    AgentSettings,
    BudgetReport,
    Command,
    CommandResult,
    ConfigLayer,
    ConfigPush,
    ConfigResult,
    Control,
    Heartbeat,
    IntelPush,
    IntelResult,
    IntelWarnings,
    ServerControl,
    effective_settings,
    parse_layer,
)
from a2z.records.network import Conn, Dns, Ftp, Http, Record, Ssl, Weird
from a2z.records.ruleset import PushedRule, RulesPush, RulesResult
from a2z.records.wire import (
    MAX_FRAME_BYTES,
    Batch,
    BatchHeader,
    WireError,
    decode_batch,
    encode_batch,
    peek_header,
)

__all__ = [
    "MAX_CONTROL_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_RESULT_BYTES",
    "AgentSettings",
    "Alert",
    "Batch",
    "BatchHeader",
    "BudgetReport",
    "Command",
    "CommandResult",
    "ConfigLayer",
    "ConfigPush",
    "ConfigResult",
    "Conn",
    "Control",
    "Dns",
    "Ftp",
    "Heartbeat",
    "Http",
    "IntelPush",
    "IntelResult",
    "IntelWarnings",
    "PushedRule",
    "Record",
    "RulesPush",
    "RulesResult",
    "ServerControl",
    "Severity",
    "Ssl",
    "Weird",
    "WireError",
    "decode_batch",
    "effective_settings",
    "encode_batch",
    "parse_layer",
    "peek_header",
]
