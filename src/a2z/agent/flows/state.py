"""Per-connection TCP state, history letters and conn_state, following Zeek's TCP analyzer.

Mirrors zeek/src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc (endpoint state machine,
``update_history``, sequence tracking for payload sizes) and ``conn_state()`` in
scripts/base/protocols/conn/main.zeek, so our conn records can be diffed against Zeek's.

Both endpoints (Zeek's two TCP_Endpoint objects) are fields of one object, ``o_*`` for the
originator and ``r_*`` for the responder, and the flow table's ``Flow`` extends that object: a
TCP flow is one allocation and one object for the garbage collector instead of four (ADR 0006,
update 4). ``TcpSession.process`` loads the sending side and its peer into locals, moves them
and stores them back.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from a2z.agent.decode.tcp import ACK, FIN, RST, SYN

_M32: Final = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA: Final = 1048576  # Zeek: larger SYN/RST sequence jumps are not trusted


class EndpointState(enum.IntEnum):
    """Zeek's TCP endpoint states (TCP_ENDPOINT_*); the session holds them as plain ints."""

    INACTIVE = 0
    SYN_SENT = 1
    SYN_ACK_SENT = 2
    PARTIAL = 3
    ESTABLISHED = 4
    CLOSED = 5
    RESET = 6


# Plain int constants (mypyc inlines them and compares natively; the enum members are objects).
INACTIVE: Final = 0
SYN_SENT: Final = 1
SYN_ACK_SENT: Final = 2
PARTIAL: Final = 3
ESTABLISHED: Final = 4
CLOSED: Final = 5
RESET: Final = 6
# INACTIVE, SYN_SENT and SYN_ACK_SENT are 0..2: "still in the handshake" is state <= this.
_HANDSHAKE_MAX: Final = 2

# History bits (Zeek's HIST_* masks); the responder's are shifted left by 16.
HIST_SYN: Final = 0x1
HIST_FIN: Final = 0x2
HIST_RST: Final = 0x4
HIST_FIN_RST: Final = 0x8
HIST_ACK: Final = 0x10
HIST_DATA: Final = 0x20
HIST_MULTI_FLAG: Final = 0x200

_RSTOS0: Final = re.compile(r"\^?S[^HAFGIQ]*R.*")


def seq_delta(a: int, b: int) -> int:
    """Signed 32-bit difference a - b, as TCP sequence arithmetic wants."""
    return ((a - b + 0x80000000) & _M32) - 0x80000000


class History:
    """Zeek's connection history string: each letter once, except where Zeek repeats them."""

    __slots__ = ("letters", "seen")

    def __init__(self) -> None:
        self.letters = ""
        self.seen = 0

    def check(self, mask: int, code: str) -> bool:
        """Add ``code`` the first time ``mask`` is seen; return True if it was seen before."""
        if self.seen & mask:
            return True
        self.seen |= mask
        self.letters += code
        return False

    def add(self, code: str) -> None:
        """Append a letter unconditionally."""
        self.letters += code


class TcpSession(History):
    """Both endpoints of one TCP connection (Zeek's TCP_Endpoint pair) and the rules that move
    them; it is also the connection's history.

    Per endpoint (``o_`` originator, ``r_`` responder): ``state`` and ``prev`` (previous state),
    sequence numbers unwrapped to 64 bits — ``start`` (the SYN's), ``last`` (highest sent plus
    one), ``ack`` (highest of ours the peer acknowledged) —, ``fin_cnt``, ``closed`` (Zeek's
    did_close), the relative sequence of the last SYN/FIN/RST letter (``hsyn``/``hfin``/
    ``hrst``) and the scaled counters of retransmissions and zero windows.
    """

    __slots__ = (
        "o_ack",
        "o_closed",
        "o_fin_cnt",
        "o_hfin",
        "o_hrst",
        "o_hsyn",
        "o_last",
        "o_prev",
        "o_rxmt_cnt",
        "o_rxmt_thresh",
        "o_start",
        "o_state",
        "o_win0_cnt",
        "o_win0_thresh",
        "r_ack",
        "r_closed",
        "r_fin_cnt",
        "r_hfin",
        "r_hrst",
        "r_hsyn",
        "r_last",
        "r_prev",
        "r_rxmt_cnt",
        "r_rxmt_thresh",
        "r_start",
        "r_state",
        "r_win0_cnt",
        "r_win0_thresh",
    )

    def __init__(self) -> None:
        super().__init__()
        self.o_state = INACTIVE
        self.o_prev = INACTIVE
        self.o_start = 0
        self.o_last = 0
        self.o_ack = 0
        self.o_fin_cnt = 0
        self.o_closed = False
        self.o_hsyn = 0
        self.o_hfin = 0
        self.o_hrst = 0
        self.o_rxmt_cnt = 0
        self.o_rxmt_thresh = 1
        self.o_win0_cnt = 0
        self.o_win0_thresh = 1
        self.r_state = INACTIVE
        self.r_prev = INACTIVE
        self.r_start = 0
        self.r_last = 0
        self.r_ack = 0
        self.r_fin_cnt = 0
        self.r_closed = False
        self.r_hsyn = 0
        self.r_hfin = 0
        self.r_hrst = 0
        self.r_rxmt_cnt = 0
        self.r_rxmt_thresh = 1
        self.r_win0_cnt = 0
        self.r_win0_thresh = 1

    def both_closed(self) -> bool:
        return self.o_closed and self.r_closed

    def in_handshake(self) -> bool:
        return self.o_state <= _HANDSHAKE_MAX and self.r_state <= _HANDSHAKE_MAX

    def is_attempt(self) -> bool:
        """Originator sent a SYN that nothing answered (Zeek's AttemptTimer condition)."""
        return self.o_state in (SYN_SENT, SYN_ACK_SENT) and self.r_state == INACTIVE

    def is_reuse(self, flags: int, seq: int) -> bool:
        """A SYN that starts a new connection on this 5-tuple (Zeek's IsReuse)."""
        if not flags & SYN:
            return False
        conn_state = self.o_state  # the side that would be the originator: orig...
        conn_start = self.o_start
        if flags & ACK:
            if self.o_state != INACTIVE:
                return False
            conn_state = self.r_state  # ...or, for a SYN-ACK, the responder
            conn_start = self.r_start
        if not self.is_closed():
            if seq == conn_start & _M32:
                return False
            return not (
                not flags & ACK
                and conn_state == SYN_ACK_SENT
                and self.r_state == INACTIVE
                and seq == self.r_start & _M32
            )
        return True

    def is_closed(self) -> bool:
        """Zeek's IsClosed: either side has closed (FIN or RST) in some sense."""
        return self.o_closed or self.r_closed

    def stream_start(self, is_orig: bool) -> int:
        """The initial sequence number of one direction (its SYN's, or as though there was one)."""
        return self.o_start if is_orig else self.r_start

    def orig_bytes(self) -> int:
        """Payload bytes the originator sent, from sequence numbers (Zeek's Size)."""
        return _size(
            self.o_prev, self.o_state, self.r_state, self.o_start, self.o_last, self.o_ack,
            self.o_fin_cnt,
        )  # fmt: skip

    def resp_bytes(self) -> int:
        """Payload bytes the responder sent, from sequence numbers (Zeek's Size)."""
        return _size(
            self.r_prev, self.r_state, self.o_state, self.r_start, self.r_last, self.r_ack,
            self.r_fin_cnt,
        )  # fmt: skip

    def process(
        self, is_orig: bool, flags: int, seq: int, ack: int, length: int, window: int
    ) -> tuple[bool, bool]:
        """Apply one segment; return (do_close, close_complete) as Zeek's ConnectionClosed sees it.

        ``length`` is the TCP payload length from the IP length fields (not the captured bytes).
        The sender's fields (``state``, ``start``...) and its peer's (``p_*``) are worked on as
        locals and stored back at the end.
        """
        if is_orig:
            state, prev, start, last = self.o_state, self.o_prev, self.o_start, self.o_last
            e_ack, fin_cnt, closed = self.o_ack, self.o_fin_cnt, self.o_closed
            p_state, p_prev, p_start = self.r_state, self.r_prev, self.r_start
            p_last, p_ack, p_closed = self.r_last, self.r_ack, self.r_closed
        else:
            state, prev, start, last = self.r_state, self.r_prev, self.r_start, self.r_last
            e_ack, fin_cnt, closed = self.r_ack, self.r_fin_cnt, self.r_closed
            p_state, p_prev, p_start = self.o_state, self.o_prev, self.o_start
            p_last, p_ack, p_closed = self.o_last, self.o_ack, self.o_closed
        syn = (flags & SYN) != 0
        fin = (flags & FIN) != 0
        rst = (flags & RST) != 0
        has_ack = (flags & ACK) != 0

        seg_len = length + int(syn) + int(fin) - (length if rst else 0)
        seq_end = (seq + seg_len) & _M32

        # Zeek's endpoint initialisation from the first segment (or a new SYN).
        init = False
        if state == INACTIVE:
            if syn:
                init = True
            else:
                # A partial connection: number as though there had been a SYN.
                start = e_ack = (seq - 1) & _M32
                last = start + 1
        elif state in (SYN_SENT, SYN_ACK_SENT):
            init = syn and seq != start & _M32
        elif state in (ESTABLISHED, PARTIAL):
            init = syn
        elif state == RESET:
            init = syn and prev == INACTIVE
        if init:
            start = e_ack = seq
            last = seq + seq_delta(seq_end, seq)

        rel_seq = last + seq_delta(seq, last & _M32) - start
        if syn or fin or rst:
            self._control_history(is_orig, flags, rel_seq, length)
        elif length:  # the common case: a data segment or a bare ACK
            if is_orig:
                self.check(HIST_DATA, "D")
            else:
                self.check(HIST_DATA << 16, "d")
        elif has_ack:
            if is_orig:
                self.check(HIST_ACK, "A")
            else:
                self.check(HIST_ACK << 16, "a")

        if window == 0 and not rst and p_state != CLOSED and state != RESET:
            self._scaled_win0(is_orig)

        if fin:
            fin_cnt += 1

        if has_ack:
            if p_state == INACTIVE:
                p_start = p_ack = p_last = (ack - 1) & _M32
            else:
                full_ack = p_ack + seq_delta(ack, p_ack & _M32)
                if full_ack - p_start >= 0 and not rst:
                    delta_ack = full_ack - p_ack
                    if not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA) and delta_ack > 0:
                        p_ack = full_ack

        # Zeek's UpdateLastSeq.
        full = last + seq_delta(seq_end, last & _M32)
        delta_last = full - last
        if (syn or rst) and abs(delta_last) > TOO_LARGE_SEQ_DELTA:
            pass  # an outlandish SYN/RST sequence number is not trusted
        elif fin and last == start + 1:
            # Trust the FIN even if it seems to go backwards: > 2 GB flows seen only by SYN/FIN.
            last = start + ((seq_end - start) & _M32)
        elif state == RESET:
            pass  # nothing after a RST is trusted
        elif delta_last > 0:
            last = full
        elif length > 0:
            self._scaled_rxmt(is_orig)

        # Zeek's UpdateStateMachine: move the sender's state (and in a few cases its peer's).
        # A state change keeps the previous state in ``prev`` (TCP_Endpoint::SetState).
        do_close = False
        if state == INACTIVE:
            if syn:
                if is_orig:
                    prev, state = state, SYN_ACK_SENT if has_ack else SYN_SENT
                else:
                    if not has_ack and p_state == SYN_ACK_SENT and seq == start & _M32:
                        # A SYN/SYN-ACK reversal: Zeek flips roles; we keep them and establish.
                        p_prev, p_state = p_state, ESTABLISHED
                    if p_state == SYN_SENT:
                        p_prev, p_state = p_state, ESTABLISHED
                    prev, state = state, ESTABLISHED
            if fin:
                if state != CLOSED:
                    prev, state = state, CLOSED
                do_close = True
            if rst:
                if state != RESET:
                    prev, state = state, RESET
                do_close = True
            if state == INACTIVE:  # no control flag moved the state
                if not is_orig and length == 0 and p_state == SYN_SENT:
                    pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
                elif has_ack and p_state == ESTABLISHED:
                    prev, state = state, ESTABLISHED  # missed the SYN but saw the SYN-ACK
                else:
                    prev, state = state, PARTIAL
        elif state in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                prev, state = state, CLOSED
                do_close = True
            if rst:
                if state != RESET:
                    prev, state = state, RESET
                do_close = True
        elif state in (ESTABLISHED, PARTIAL):
            if syn and state == PARTIAL and p_state == INACTIVE and not has_ack:
                prev, state = state, SYN_SENT
            if fin and not rst:
                if state != CLOSED:
                    prev, state = state, CLOSED
                if p_state == RESET and p_prev == CLOSED:
                    p_prev, p_state = p_state, CLOSED  # the peer's FIN then RST: a normal close
                do_close = True
            if rst:
                if state != RESET:
                    prev, state = state, RESET
                do_close = True
        elif state == CLOSED and rst and p_state != CLOSED:
            # A RST after our FIN; it changes nothing once the peer has closed too.
            prev, state = state, RESET
            do_close = not closed
        # RESET (or CLOSED without that RST): nothing changes the state

        complete = False
        if do_close and not closed:
            closed = True
            complete = state == RESET or p_closed or p_state == INACTIVE

        if is_orig:
            self.o_state, self.o_prev, self.o_start, self.o_last = state, prev, start, last
            self.o_ack, self.o_fin_cnt, self.o_closed = e_ack, fin_cnt, closed
            self.r_state, self.r_prev, self.r_start = p_state, p_prev, p_start
            self.r_last, self.r_ack = p_last, p_ack
        else:
            self.r_state, self.r_prev, self.r_start, self.r_last = state, prev, start, last
            self.r_ack, self.r_fin_cnt, self.r_closed = e_ack, fin_cnt, closed
            self.o_state, self.o_prev, self.o_start = p_state, p_prev, p_start
            self.o_last, self.o_ack = p_last, p_ack
        return do_close, complete

    def conn_state(self, history: str) -> str:
        """Zeek's conn_state() for TCP."""
        os_, rs = self.o_state, self.r_state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (
                os_ == RESET and self.orig_bytes() == 0 and self.resp_bytes() == 0
            ):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == RESET:
            if r_inactive:
                return "RSTOS0" if _RSTOS0.fullmatch(history) else "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"

    # -- the rarer history letters and scaled counters (per direction) ---------------------------

    def _control_history(self, is_orig: bool, flags: int, rel_seq: int, length: int) -> None:
        """History letters of a segment with SYN, FIN or RST (Zeek's update_history)."""
        syn, fin, rst = flags & SYN, flags & FIN, flags & RST
        shift = 0 if is_orig else 16
        bits = int(syn != 0) + int(fin != 0) + int(rst != 0)
        if bits > 1:
            if fin and rst:
                self.check(HIST_FIN_RST << shift, "I" if is_orig else "i")
            else:
                self.check(HIST_MULTI_FLAG << shift, "Q" if is_orig else "q")
            return
        if syn:
            code = ("H" if is_orig else "h") if flags & ACK else ("S" if is_orig else "s")
            last_syn = self.o_hsyn if is_orig else self.r_hsyn
            if self.check(HIST_SYN << shift, code) and rel_seq != last_syn:
                self.add(code)
            if is_orig:
                self.o_hsyn = rel_seq
            else:
                self.r_hsyn = rel_seq
        if fin:
            code = "F" if is_orig else "f"
            last_fin = self.o_hfin if is_orig else self.r_hfin
            if self.check(HIST_FIN << shift, code) and rel_seq + length != last_fin:
                self.add(code)
            if is_orig:
                self.o_hfin = rel_seq + length
            else:
                self.r_hfin = rel_seq + length
        if rst:
            code = "R" if is_orig else "r"
            last_rst = self.o_hrst if is_orig else self.r_hrst
            if self.check(HIST_RST << shift, code) and rel_seq != last_rst:
                self.add(code)
            if is_orig:
                self.o_hrst = rel_seq
            else:
                self.r_hrst = rel_seq

    def _scaled_win0(self, is_orig: bool) -> None:
        """Zeek's ScaledHistoryEntry for zero windows: W/w at 1, 10, 100... occurrences."""
        if is_orig:
            self.o_win0_cnt += 1
            if self.o_win0_cnt == self.o_win0_thresh:
                self.add("W")
                self.o_win0_thresh *= 10
        else:
            self.r_win0_cnt += 1
            if self.r_win0_cnt == self.r_win0_thresh:
                self.add("w")
                self.r_win0_thresh *= 10

    def _scaled_rxmt(self, is_orig: bool) -> None:
        """Zeek's ScaledHistoryEntry for retransmissions: T/t at 1, 10, 100... occurrences."""
        if is_orig:
            self.o_rxmt_cnt += 1
            if self.o_rxmt_cnt == self.o_rxmt_thresh:
                self.add("T")
                self.o_rxmt_thresh *= 10
        else:
            self.r_rxmt_cnt += 1
            if self.r_rxmt_cnt == self.r_rxmt_thresh:
                self.add("t")
                self.r_rxmt_thresh *= 10


def _size(
    prev: int, state: int, peer_state: int, start: int, last: int, ack: int, fin_cnt: int
) -> int:
    """Payload bytes one endpoint sent, from its sequence numbers (Zeek's TCP_Endpoint::Size)."""
    if (
        prev == SYN_SENT
        and state == RESET
        and peer_state == INACTIVE
        and not (ack == start or ack == start + 1)  # some data was acknowledged
    ):
        return 0  # a half-open connection discovered and aborted
    size = max(last, ack) - start
    if size > 0:
        size -= 1  # the SYN octet
    if fin_cnt > 0 and size > 0:
        size -= 1  # the FIN octet
    return max(size, 0)


def udp_conn_state(orig_active: bool, resp_active: bool) -> str:
    """Zeek's conn_state() for UDP: an endpoint is active once it sent a datagram."""
    if orig_active:
        return "SF" if resp_active else "S0"
    return "SHR" if resp_active else "OTH"


__all__ = [
    "EndpointState",
    "History",
    "TcpSession",
    "seq_delta",
    "udp_conn_state",
]
