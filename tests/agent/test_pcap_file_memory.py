"""The file reader hands mapped pages back as it goes, without changing a byte it yields."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2z.agent.capture import open_capture, pcap_file

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", ["frag-v4v6-udp-icmp.pcap", "http1-with-cookies.pcapng"])
def test_released_pages_do_not_change_the_packets(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = [(p.ts, p.linktype, p.data, p.wirelen) for p in open_capture(DATA / name)]
    released: list[tuple[int, int]] = []
    real_release = pcap_file._release

    def spy(buf: object, start: int, upto: int) -> int:
        new = real_release(buf, start, upto)  # type: ignore[arg-type]
        released.append((start, new))
        return new

    # Release every page as soon as it is behind us (the default waits for 8 MiB).
    monkeypatch.setattr(pcap_file, "RELEASE_BYTES", 1)
    monkeypatch.setattr(pcap_file, "_release", spy)
    again = [(p.ts, p.linktype, p.data, p.wirelen) for p in open_capture(DATA / name)]
    assert again == whole
    if name.endswith(".pcap"):  # the pcapng file is smaller than one page
        assert released
        assert released[-1][1] > 0
