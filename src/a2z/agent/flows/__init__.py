"""Flow tracking: 5-tuple table, timeouts and Zeek conn semantics (conn_state, history)."""

from __future__ import annotations

from a2z.agent.flows.state import EndpointState, History, TcpSession, udp_conn_state
from a2z.agent.flows.table import Flow, FlowConfig, FlowTable
from a2z.agent.flows.timers import FlowKey
from a2z.agent.flows.to_record import flow_to_conn, format_addr

__all__ = [
    "EndpointState",
    "Flow",
    "FlowConfig",
    "FlowKey",
    "FlowTable",
    "History",
    "TcpSession",
    "flow_to_conn",
    "format_addr",
    "udp_conn_state",
]
