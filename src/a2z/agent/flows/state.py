"""Per-connection TCP state, history letters and conn_state, following Zeek's TCP analyzer.

Mirrors zeek/src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc (endpoint state machine,
``update_history``, sequence tracking for payload sizes) and ``conn_state()`` in
scripts/base/protocols/conn/main.zeek, so our conn records can be diffed against Zeek's.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from a2z.agent.decode.tcp import ACK, FIN, RST, SYN

_M32: Final = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA: Final = 1048576  # Zeek: larger SYN/RST sequence jumps are not trusted


class EndpointState(enum.IntEnum):
    """Zeek's TCP endpoint states (TCP_ENDPOINT_*)."""

    INACTIVE = 0
    SYN_SENT = 1
    SYN_ACK_SENT = 2
    PARTIAL = 3
    ESTABLISHED = 4
    CLOSED = 5
    RESET = 6


INACTIVE: Final = EndpointState.INACTIVE
SYN_SENT: Final = EndpointState.SYN_SENT
SYN_ACK_SENT: Final = EndpointState.SYN_ACK_SENT
PARTIAL: Final = EndpointState.PARTIAL
ESTABLISHED: Final = EndpointState.ESTABLISHED
CLOSED: Final = EndpointState.CLOSED
RESET: Final = EndpointState.RESET
_HANDSHAKE: Final = frozenset({INACTIVE, SYN_SENT, SYN_ACK_SENT})

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


class TcpEndpoint:
    """One side of a TCP connection (Zeek's TCP_Endpoint), with 64-bit unwrapped sequences."""

    __slots__ = (
        "ack",
        "did_close",
        "fin_cnt",
        "hist_last_fin",
        "hist_last_rst",
        "hist_last_syn",
        "is_orig",
        "last",
        "prev_state",
        "rxmt_cnt",
        "rxmt_thresh",
        "start",
        "state",
        "win0_cnt",
        "win0_thresh",
    )

    def __init__(self, is_orig: bool) -> None:
        self.is_orig = is_orig
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.start = 0  # initial sequence number (SYN's), full space
        self.last = 0  # highest sequence number sent plus one, full space
        self.ack = 0  # highest sequence number of ours the peer acknowledged, full space
        self.fin_cnt = 0
        self.did_close = False
        self.hist_last_syn = 0
        self.hist_last_fin = 0
        self.hist_last_rst = 0
        self.rxmt_cnt = 0
        self.rxmt_thresh = 1
        self.win0_cnt = 0
        self.win0_thresh = 1

    def set_state(self, state: EndpointState) -> None:
        if state != self.state:
            self.prev_state = self.state
            self.state = state

    def init_seqs(self, seq: int, last: int | None = None) -> None:
        self.start = seq
        self.ack = seq
        self.last = seq if last is None else self.start + seq_delta(last, seq)

    def unwrap_last(self, seq32: int) -> int:
        return self.last + seq_delta(seq32, self.last & _M32)

    def unwrap_ack(self, seq32: int) -> int:
        return self.ack + seq_delta(seq32, self.ack & _M32)

    def no_data_acked(self) -> bool:
        return self.ack in (self.start, self.start + 1)

    def size(self, peer: TcpEndpoint) -> int:
        """Payload bytes sent, from sequence numbers (Zeek's TCP_Endpoint::Size)."""
        if (
            self.prev_state == SYN_SENT
            and self.state == RESET
            and peer.state == INACTIVE
            and not self.no_data_acked()
        ):
            return 0  # a half-open connection discovered and aborted
        size = max(self.last, self.ack) - self.start
        if size > 0:
            size -= 1  # the SYN octet
        if self.fin_cnt > 0 and size > 0:
            size -= 1  # the FIN octet
        return max(size, 0)


def _scaled(history: History, code: str, counter: int, thresh: int) -> tuple[int, int]:
    """Zeek's ScaledHistoryEntry: the letter repeats at 1, 10, 100... occurrences."""
    counter += 1
    if counter == thresh:
        history.add(code)
        thresh *= 10
    return counter, thresh


class TcpSession:
    """Both endpoints of one TCP connection and the rules that move them."""

    __slots__ = ("orig", "resp")

    def __init__(self) -> None:
        self.orig = TcpEndpoint(True)
        self.resp = TcpEndpoint(False)

    def both_closed(self) -> bool:
        return self.orig.did_close and self.resp.did_close

    def in_handshake(self) -> bool:
        return self.orig.state in _HANDSHAKE and self.resp.state in _HANDSHAKE

    def is_attempt(self) -> bool:
        """Originator sent a SYN that nothing answered (Zeek's AttemptTimer condition)."""
        return self.orig.state in (SYN_SENT, SYN_ACK_SENT) and self.resp.state == INACTIVE

    def is_reuse(self, flags: int, seq: int) -> bool:
        """A SYN that starts a new connection on this 5-tuple (Zeek's IsReuse)."""
        if not flags & SYN:
            return False
        conn_orig = self.orig
        if flags & ACK:
            if self.orig.state != INACTIVE:
                return False
            conn_orig = self.resp
        if not self.is_closed():
            if seq == conn_orig.start & _M32:
                return False
            return not (
                not flags & ACK
                and conn_orig.state == SYN_ACK_SENT
                and self.resp.state == INACTIVE
                and seq == self.resp.start & _M32
            )
        return True

    def is_closed(self) -> bool:
        """Zeek's IsClosed: either side has closed (FIN or RST) in some sense."""
        return self.orig.did_close or self.resp.did_close

    def process(
        self, is_orig: bool, flags: int, seq: int, ack: int, length: int, window: int, hist: History
    ) -> tuple[bool, bool]:
        """Apply one segment; return (do_close, close_complete) as Zeek's ConnectionClosed sees it.

        ``length`` is the TCP payload length from the IP length fields (not the captured bytes).
        """
        endpoint = self.orig if is_orig else self.resp
        peer = self.resp if is_orig else self.orig
        syn = bool(flags & SYN)
        fin = bool(flags & FIN)
        rst = bool(flags & RST)
        has_ack = bool(flags & ACK)

        seg_len = length + syn + fin - (length if rst else 0)
        seq_end = (seq + seg_len) & _M32
        _init_endpoint(endpoint, syn, seq, seq_end)

        full_seq = endpoint.unwrap_last(seq)
        rel_seq = full_seq - endpoint.start
        _update_history(hist, endpoint, flags, rel_seq, length)

        if window == 0 and not rst and peer.state != CLOSED and endpoint.state != RESET:
            endpoint.win0_cnt, endpoint.win0_thresh = _scaled(
                hist, "W" if is_orig else "w", endpoint.win0_cnt, endpoint.win0_thresh
            )

        if fin:
            endpoint.fin_cnt += 1

        if has_ack:
            if peer.state == INACTIVE:
                peer.init_seqs((ack - 1) & _M32)
            else:
                full_ack = peer.unwrap_ack(ack)
                underflow = full_ack - peer.start < 0
                if not underflow and not rst:
                    delta_ack = full_ack - peer.ack
                    if not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA) and delta_ack > 0:
                        peer.ack = full_ack

        _update_last_seq(endpoint, seq_end, syn, fin, rst, length, hist)
        do_close = _update_state_machine(self, endpoint, peer, seq, length, is_orig, flags)
        if not do_close or endpoint.did_close:
            return do_close, False
        endpoint.did_close = True
        complete = endpoint.state == RESET or peer.did_close or peer.state == INACTIVE
        return True, complete

    def conn_state(self, history: str) -> str:
        """Zeek's conn_state() for TCP."""
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (
                os_ == RESET and self.orig.size(self.resp) == 0 and self.resp.size(self.orig) == 0
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


def udp_conn_state(orig_active: bool, resp_active: bool) -> str:
    """Zeek's conn_state() for UDP: an endpoint is active once it sent a datagram."""
    if orig_active:
        return "SF" if resp_active else "S0"
    return "SHR" if resp_active else "OTH"


def _init_endpoint(endpoint: TcpEndpoint, syn: bool, seq: int, seq_end: int) -> None:
    state = endpoint.state
    if state == INACTIVE:
        if syn:
            endpoint.init_seqs(seq, seq_end)
        else:
            # A partial connection: number as though there had been a SYN.
            endpoint.init_seqs((seq - 1) & _M32)
            endpoint.last = endpoint.start + 1
    elif state in (SYN_SENT, SYN_ACK_SENT):
        if syn and seq != endpoint.start & _M32:
            endpoint.init_seqs(seq, seq_end)
    elif state in (ESTABLISHED, PARTIAL):
        if syn:
            endpoint.init_seqs(seq, seq_end)
    elif state == RESET and syn and endpoint.prev_state == INACTIVE:
        endpoint.init_seqs(seq, seq_end)


def _update_history(
    hist: History, endpoint: TcpEndpoint, flags: int, rel_seq: int, length: int
) -> None:
    is_orig = endpoint.is_orig
    syn, fin, rst = flags & SYN, flags & FIN, flags & RST
    if not (syn or fin or rst):  # the common case: a data segment or a bare ACK
        if length:
            if is_orig:
                hist.check(HIST_DATA, "D")
            else:
                hist.check(HIST_DATA << 16, "d")
        elif flags & ACK:
            if is_orig:
                hist.check(HIST_ACK, "A")
            else:
                hist.check(HIST_ACK << 16, "a")
        return
    shift = 0 if is_orig else 16
    letters = _ORIG_LETTERS if is_orig else _RESP_LETTERS
    bits = bool(syn) + bool(fin) + bool(rst)
    if bits > 1:
        if fin and rst:
            hist.check(HIST_FIN_RST << shift, letters["I"])
        else:
            hist.check(HIST_MULTI_FLAG << shift, letters["Q"])
        return
    if syn:
        code = letters["H" if flags & ACK else "S"]
        if hist.check(HIST_SYN << shift, code) and rel_seq != endpoint.hist_last_syn:
            hist.add(code)
        endpoint.hist_last_syn = rel_seq
    if fin:
        if hist.check(HIST_FIN << shift, letters["F"]) and (
            rel_seq + length != endpoint.hist_last_fin
        ):
            hist.add(letters["F"])
        endpoint.hist_last_fin = rel_seq + length
    if rst:
        if hist.check(HIST_RST << shift, letters["R"]) and rel_seq != endpoint.hist_last_rst:
            hist.add(letters["R"])
        endpoint.hist_last_rst = rel_seq


_ORIG_LETTERS: Final = {code: code for code in "IQHSFR"}
_RESP_LETTERS: Final = {code: code.lower() for code in "IQHSFR"}


def _update_last_seq(
    endpoint: TcpEndpoint,
    seq_end: int,
    syn: bool,
    fin: bool,
    rst: bool,
    length: int,
    hist: History,
) -> None:
    full = endpoint.unwrap_last(seq_end)
    delta_last = full - endpoint.last
    if (syn or rst) and abs(delta_last) > TOO_LARGE_SEQ_DELTA:
        pass  # an outlandish SYN/RST sequence number is not trusted
    elif fin and endpoint.last == endpoint.start + 1:
        # Trust the FIN even if it seems to go backwards: > 2 GB flows seen only by SYN and FIN.
        endpoint.last = endpoint.start + ((seq_end - endpoint.start) & _M32)
    elif endpoint.state == RESET:
        pass  # nothing after a RST is trusted
    elif delta_last > 0:
        endpoint.last = full
    elif length > 0:
        endpoint.rxmt_cnt, endpoint.rxmt_thresh = _scaled(
            hist, "T" if endpoint.is_orig else "t", endpoint.rxmt_cnt, endpoint.rxmt_thresh
        )


def _update_state_machine(
    session: TcpSession,
    endpoint: TcpEndpoint,
    peer: TcpEndpoint,
    seq: int,
    length: int,
    is_orig: bool,
    flags: int,
) -> bool:
    """Move the sending endpoint's state; return do_close (Zeek's UpdateStateMachine)."""
    state = endpoint.state
    if state == INACTIVE:
        return _update_inactive(session, endpoint, peer, seq, length, is_orig, flags)
    if state in (SYN_SENT, SYN_ACK_SENT):
        return _update_syn_sent(endpoint, flags)
    if state in (ESTABLISHED, PARTIAL):
        return _update_established(endpoint, peer, flags)
    if state == CLOSED:
        # A RST after our FIN changes nothing once the peer has closed too.
        if flags & RST and peer.state != CLOSED:
            endpoint.set_state(RESET)
            return not endpoint.did_close
        return False
    return False  # RESET: nothing after a reset changes the state


def _update_inactive(
    session: TcpSession,
    endpoint: TcpEndpoint,
    peer: TcpEndpoint,
    seq: int,
    length: int,
    is_orig: bool,
    flags: int,
) -> bool:
    do_close = False
    if flags & SYN:
        if is_orig:
            endpoint.set_state(SYN_ACK_SENT if flags & ACK else SYN_SENT)
        else:
            if not flags & ACK and peer.state == SYN_ACK_SENT and seq == endpoint.start & _M32:
                # A SYN/SYN-ACK reversal: Zeek flips roles; we keep them and establish.
                peer.set_state(ESTABLISHED)
            if peer.state == SYN_SENT:
                peer.set_state(ESTABLISHED)
            endpoint.set_state(ESTABLISHED)
    if flags & FIN:
        endpoint.set_state(CLOSED)
        do_close = True
    if flags & RST:
        endpoint.set_state(RESET)
        do_close = True
    if endpoint.state == INACTIVE:  # no control flag moved the state
        if not is_orig and length == 0 and session.orig.state == SYN_SENT:
            pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
        elif flags & ACK and peer.state == ESTABLISHED:
            endpoint.set_state(ESTABLISHED)  # missed the SYN but saw the SYN-ACK
        else:
            endpoint.set_state(PARTIAL)
    return do_close


def _update_syn_sent(endpoint: TcpEndpoint, flags: int) -> bool:
    do_close = False
    if flags & FIN:
        endpoint.set_state(CLOSED)
        do_close = True
    if flags & RST:
        endpoint.set_state(RESET)
        do_close = True
    return do_close


def _update_established(endpoint: TcpEndpoint, peer: TcpEndpoint, flags: int) -> bool:
    do_close = False
    if flags & SYN and endpoint.state == PARTIAL and peer.state == INACTIVE and not flags & ACK:
        endpoint.set_state(SYN_SENT)
    if flags & FIN and not flags & RST:
        endpoint.set_state(CLOSED)
        if peer.state == RESET and peer.prev_state == CLOSED:
            peer.set_state(CLOSED)  # the peer's FIN then RST was a normal close
        do_close = True
    if flags & RST:
        endpoint.set_state(RESET)
        do_close = True
    return do_close


__all__ = [
    "EndpointState",
    "History",
    "TcpEndpoint",
    "TcpSession",
    "seq_delta",
    "udp_conn_state",
]
