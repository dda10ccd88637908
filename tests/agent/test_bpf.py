"""BPF compilation through libpcap: the same programs tcpdump builds, clear errors otherwise."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from a2z.agent.capture.bpf import BpfProgram, FilterError, compile_bpf

EXPRESSIONS = [
    "udp port 53",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "host 10.0.0.1 and not icmp",
    "ip6 and udp portrange 1000-2000",
    "vlan 7 and udp",
]


def _tcpdump_program(expression: str, link: str) -> list[tuple[int, int, int, int]]:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.fail("tcpdump is not installed; .ci/run installs it")
    out = subprocess.run(
        [tcpdump, "-y", link, "-ddd", expression],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout.split("\n")
    count = int(out[0])
    rows = [tuple(int(v) for v in line.split()) for line in out[1 : 1 + count]]
    return [(r[0], r[1], r[2], r[3]) for r in rows]


@pytest.mark.needs_tools
@pytest.mark.parametrize("expression", EXPRESSIONS)
@pytest.mark.parametrize(("linktype", "link"), [(1, "EN10MB"), (101, "RAW")])
def test_compiled_program_is_the_one_tcpdump_builds(
    expression: str, linktype: int, link: str
) -> None:
    if linktype == 101 and expression.startswith("vlan"):
        with pytest.raises(FilterError):  # no VLAN tags on raw IP: libpcap refuses, so do we
            compile_bpf(expression, linktype)
        return
    program = compile_bpf(expression, linktype)
    assert list(program.instructions) == _tcpdump_program(expression, link)
    assert len(program.pack()) == 8 * len(program)  # struct sock_filter is 8 bytes


def test_bad_expression_is_a_filter_error_naming_it() -> None:
    with pytest.raises(FilterError, match=r"bad BPF filter 'udp portt 53': .*syntax error"):
        compile_bpf("udp portt 53", 1)


def test_program_keeps_its_expression_for_messages() -> None:
    program = compile_bpf("icmp", 1)
    assert isinstance(program, BpfProgram)
    assert program.expression == "icmp"
    assert program.instructions[-1][0] == 0x06  # BPF_RET: every program ends in a return
