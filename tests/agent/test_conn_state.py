"""conn_state and history for each of Zeek's 13 states, scenario by scenario.

Expected values follow Zeek's TCP analyzer (TCPSessionAdapter.cc: endpoint state machine and
update_history) and conn_state() in scripts/base/protocols/conn/main.zeek.
"""

from __future__ import annotations

import pytest

from a2z.agent.flows import FlowConfig
from a2z.agent.pipeline import Pipeline
from a2z.records import Conn
from tests.agent.packet_builder import ACK, FIN, RST, SYN, eth, ipv4, raw, tcp

A, B = "10.0.0.1", "10.0.0.2"
A_PORT, B_PORT = 40000, 80

# (sender "o" = 10.0.0.1:40000 or "r" = 10.0.0.2:80, flags, seq, ack, payload bytes)
Step = tuple[str, int, int, int, int]

HANDSHAKE: list[Step] = [
    ("o", SYN, 100, 0, 0),
    ("r", SYN | ACK, 500, 101, 0),
    ("o", ACK, 101, 501, 0),
]

SCENARIOS: dict[str, tuple[list[Step], str, str]] = {
    # name: (packets, conn_state, history)
    "attempt without reply": ([("o", SYN, 100, 0, 0)], "S0", "S"),
    "established, not closed": (HANDSHAKE, "S1", "ShA"),
    "normal close": (
        [
            *HANDSHAKE,
            ("o", ACK, 101, 501, 20),
            ("r", ACK, 501, 121, 300),
            ("o", FIN | ACK, 121, 801, 0),
            ("r", FIN | ACK, 801, 122, 0),
            ("o", ACK, 122, 802, 0),
        ],
        "SF",
        "ShADdFf",
    ),
    "rejected": ([("o", SYN, 100, 0, 0), ("r", RST | ACK, 0, 101, 0)], "REJ", "Sr"),
    "originator close only": ([*HANDSHAKE, ("o", FIN | ACK, 101, 501, 0)], "S2", "ShAF"),
    "responder close only": ([*HANDSHAKE, ("r", FIN | ACK, 501, 101, 0)], "S3", "ShAf"),
    "originator aborted": ([*HANDSHAKE, ("o", RST, 101, 0, 0)], "RSTO", "ShAR"),
    "responder aborted": ([*HANDSHAKE, ("r", RST, 501, 0, 0)], "RSTR", "ShAr"),
    "originator SYN then RST": ([("o", SYN, 100, 0, 0), ("o", RST, 101, 0, 0)], "RSTOS0", "SR"),
    # The first packet is a SYN-ACK: the flow is flipped (history "^") so its sender responds.
    "responder SYN-ACK then RST": (
        [("r", SYN | ACK, 500, 101, 0), ("r", RST, 501, 0, 0)],
        "RSTRH",
        "^hr",
    ),
    "originator SYN then FIN": ([("o", SYN, 100, 0, 0), ("o", FIN, 101, 0, 0)], "SH", "SF"),
    "responder SYN-ACK then FIN": (
        [("r", SYN | ACK, 500, 101, 0), ("r", FIN | ACK, 501, 101, 0)],
        "SHR",
        "^hf",
    ),
    "midstream traffic": ([("o", ACK, 7000, 9000, 50), ("r", ACK, 9000, 7050, 80)], "OTH", "Dd"),
}


def _replay(steps: list[Step], config: FlowConfig | None = None) -> list[Conn]:
    pipeline = Pipeline(config)
    records = []
    for i, (who, flags, seq, ack, size) in enumerate(steps):
        segment_args = (A_PORT, B_PORT) if who == "o" else (B_PORT, A_PORT)
        src, dst = (A, B) if who == "o" else (B, A)
        segment = tcp(*segment_args, flags, seq=seq, ack=ack, data=b"p" * size)
        records += pipeline.feed(raw(1.0 + i / 10, eth(ipv4(src, dst, 6, segment))))
    records += pipeline.flush()
    return [r for r in records if isinstance(r, Conn)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conn_state_and_history_follow_zeek(scenario: str) -> None:
    steps, state, history = SCENARIOS[scenario]
    (conn,) = _replay(steps)
    assert (conn.conn_state, conn.history) == (state, history)
    assert (conn.orig_h, conn.orig_p) == (A, A_PORT)


def test_every_zeek_state_is_covered() -> None:
    states = {state for _, state, _ in SCENARIOS.values()}
    assert states == {
        "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
    }  # fmt: skip


def test_payload_bytes_come_from_sequence_numbers_not_packet_sizes() -> None:
    # The 300-byte response is retransmitted: Zeek counts it once (and marks "t").
    steps: list[Step] = [
        *HANDSHAKE,
        ("r", ACK, 501, 101, 300),
        ("r", ACK, 501, 101, 300),
        ("o", FIN | ACK, 101, 801, 0),
        ("r", FIN | ACK, 801, 102, 0),
    ]
    (conn,) = _replay(steps)
    assert (conn.orig_bytes, conn.resp_bytes) == (0, 300)
    assert conn.history == "ShAdtFf"
    assert conn.resp_pkts == 4


def test_payload_bytes_count_data_acknowledged_but_not_captured() -> None:
    # We never saw the originator's 1000 bytes, but the responder acknowledged them.
    steps: list[Step] = [*HANDSHAKE, ("r", ACK, 501, 1101, 0)]
    (conn,) = _replay(steps)
    assert conn.orig_bytes == 1000


def test_repeated_syn_with_same_sequence_is_one_attempt() -> None:
    steps: list[Step] = [("o", SYN, 100, 0, 0), ("o", SYN, 100, 0, 0)]
    (conn,) = _replay(steps)
    assert (conn.conn_state, conn.history, conn.orig_pkts) == ("S0", "S", 2)


def test_new_syn_after_close_starts_a_new_connection() -> None:
    closing: list[Step] = [
        *HANDSHAKE,
        ("o", FIN | ACK, 101, 501, 0),
        ("r", FIN | ACK, 501, 102, 0),
        ("o", SYN, 90000, 0, 0),
    ]
    conns = _replay(closing)
    assert [(c.conn_state, c.history) for c in conns] == [("SF", "ShAFf"), ("S0", "S")]
    assert conns[0].uid != conns[1].uid


def test_unanswered_syn_retransmitted_after_attempt_timeout_is_a_new_flow() -> None:
    pipeline = Pipeline(FlowConfig(tcp_attempt_timeout=5.0))
    out = []
    for ts in (0.0, 1.0, 3.0, 7.0):
        out += pipeline.feed(raw(ts, eth(ipv4(A, B, 6, tcp(A_PORT, B_PORT, SYN, seq=100)))))
    out += pipeline.flush()
    assert [(c.orig_pkts, c.conn_state) for c in out if isinstance(c, Conn)] == [
        (3, "S0"),
        (1, "S0"),
    ]
