"""TLS: hello parsing across records and segments, JA3/JA3S/JA4, ssl records, published vectors.

JA4 is checked against FoxIO's published vectors (python ``ja4.py -J -r -o`` output for their
pcaps; the Rust tool's snapshot where the Python tool printed none); Suricata's and Zeek's
expected outputs cross-check JA3/JA3S/JA4 and the ssl.log fields.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from a2z.agent.capture import RawPacket
from a2z.agent.pipeline import Pipeline
from a2z.agent.protocols import (
    NeedMoreData,
    ja3,
    ja3s,
    ja4,
    ja4_raw,
    parse_client_hello,
    parse_server_hello,
)
from a2z.agent.protocols.tls import ja3_string, ja3s_string
from a2z.agent.replay import iter_records
from a2z.records import Conn, Record, Ssl, Weird
from tests.agent.protocol_builder import (
    TcpConversation,
    client_hello,
    handshake,
    server_hello,
    tls_record,
)

DATA = Path(__file__).resolve().parents[1] / "data"
VECTORS = DATA / "ja4-expected"

# FoxIO's worked example (technical_details/JA4.md): Chrome's ClientHello.
CHROME_CIPHERS = (
    0x1301,
    0x1302,
    0x1303,
    0xC02B,
    0xC02F,
    0xC02C,
    0xC030,
    0xCCA9,
    0xCCA8,
    0xC013,
    0xC014,
    0x009C,
    0x009D,
    0x002F,
    0x0035,
)
CHROME_EXTENSIONS = (
    0x001B,
    0x0000,
    0x0033,
    0x0010,
    0x4469,
    0x0017,
    0x002D,
    0x000D,
    0x0005,
    0x0023,
    0x0012,
    0x002B,
    0xFF01,
    0x000B,
    0x000A,
    0x0015,
)
CHROME_SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def _chrome_hello() -> bytes:
    """A ClientHello with exactly the spec example's ciphers, extensions and signature algs."""
    extra: list[tuple[int, bytes]] = []
    for ext in CHROME_EXTENSIONS:
        if ext == 0x0000:
            extra.append((0, struct.pack("!HBH", 14, 0, 11) + b"example.com"))
        elif ext == 0x0010:
            extra.append((16, struct.pack("!HB", 3, 2) + b"h2"))
        elif ext == 0x000D:
            extra.append((13, struct.pack("!H8H", 16, *CHROME_SIGALGS)))
        elif ext == 0x002B:
            extra.append((43, b"\x04\x03\x04\x03\x03"))
        elif ext == 0x000A:
            extra.append((10, b"\x00\x02\x00\x1d"))
        elif ext == 0x000B:
            extra.append((11, b"\x01\x00"))
        else:
            extra.append((ext, b""))
    return client_hello(
        ciphers=(0x2A2A, *CHROME_CIPHERS),  # a GREASE value first, as Chrome sends
        sni=None,
        groups=(),
        point_formats=(),
        sig_algs=(),
        alpn=(),
        versions=(),
        extra_extensions=((0x0A0A, b""), *extra),
    )


def _run(packets: list[RawPacket]) -> list[Record]:
    pipeline = Pipeline()
    out: list[Record] = []
    for pkt in packets:
        out += pipeline.feed(pkt)
    return out + pipeline.flush()


def _ssl(records: list[Record]) -> list[Ssl]:
    return [r for r in records if isinstance(r, Ssl)]


# -- fingerprints -------------------------------------------------------------------------------


def test_ja4_matches_the_specification_example() -> None:
    hello = parse_client_hello(_chrome_hello())
    assert ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_raw(hello) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
        "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601"
    )


def test_ja4_edge_cases_no_extensions_no_sigalgs_and_alpn_forms() -> None:
    bare = parse_client_hello(
        client_hello(
            ciphers=(), sni=None, groups=(), point_formats=(), sig_algs=(), alpn=(), versions=()
        )
    )
    assert ja4(bare) == "t12i000000_000000000000_000000000000"
    no_sig = parse_client_hello(client_hello(sig_algs=(), alpn=(b"x",), versions=(0x0303,)))
    prefix, _, rest = ja4_raw(no_sig).partition("_")
    assert prefix == "t12d0205xx"  # one-character ALPN: that character twice
    assert rest.count("_") == 1  # no signature algorithms: no trailing "_" section
    assert ja4(parse_client_hello(client_hello(alpn=(b"\xba\xad",)))).split("_")[0][-2:] == "99"


def test_ja3_string_drops_grease_everywhere_but_keeps_order() -> None:
    hello = parse_client_hello(
        client_hello(
            ciphers=(0x0A0A, 0x1301, 0xC02F),
            groups=(0xFAFA, 29, 23),
            extra_extensions=((0x1A1A, b""),),
        )
    )
    assert ja3_string(hello) == "771,4865-49199,0-10-11-13-16-43,29-23,0"
    assert ja3(hello) == hashlib.md5(ja3_string(hello).encode()).hexdigest()


def test_ja3s_of_a_server_hello() -> None:
    hello = parse_server_hello(server_hello(cipher=0x1302, alpn=None))
    assert ja3s_string(hello) == "771,4866,43-51"
    assert len(ja3s(hello)) == 32
    assert (hello.negotiated, hello.key_share_group, hello.retry) == (0x0304, 29, False)


def test_truncated_hello_raises_need_more_data() -> None:
    body = client_hello()
    with pytest.raises(NeedMoreData) as err:
        parse_client_hello(body[:50])
    assert (err.value.source, err.value.name) == ("SSL", "SSL_truncated_client_hello")


# -- the analyzer through the pipeline -----------------------------------------------------------


def _tls13_conversation(split: int = 0) -> TcpConversation:
    ch = tls_record(22, handshake(1, client_hello(sni="secure.example.test")))
    sh = tls_record(22, handshake(2, server_hello(cipher=0x1302)), version=0x0303)
    conv = TcpConversation(server=("10.0.0.2", 443)).handshake()
    if split:
        for i in range(0, len(ch), split):
            conv.send(True, ch[i : i + split])
    else:
        conv.send(True, ch)
    conv.send(False, sh + tls_record(20, b"\x01") + tls_record(23, b"\0" * 40))
    conv.send(True, tls_record(20, b"\x01") + tls_record(23, b"\0" * 30))
    return conv


def test_tls13_handshake_becomes_an_established_ssl_record() -> None:
    records = _run(_tls13_conversation().close().packets)
    (rec,) = _ssl(records)
    assert (rec.version, rec.cipher, rec.curve, rec.server_name) == (
        "TLSv13",
        "TLS_AES_256_GCM_SHA384",
        "x25519",
        "secure.example.test",
    )
    assert rec.established is True
    assert rec.resumed is False
    assert rec.ja4 is not None
    assert rec.ja4.startswith("t13d0206h2_")
    (conn,) = [r for r in records if isinstance(r, Conn)]
    assert (conn.service, conn.uid) == ("ssl", rec.uid)


def test_client_hello_split_over_many_small_segments() -> None:
    whole = _ssl(_run(_tls13_conversation().close().packets))
    split = _ssl(_run(_tls13_conversation(split=3).close().packets))
    assert [(r.ja3, r.ja4, r.server_name) for r in split] == [
        (r.ja3, r.ja4, r.server_name) for r in whole
    ]


def test_client_hello_split_over_two_records() -> None:
    body = handshake(1, client_hello(sni="two.records"))
    conv = TcpConversation(server=("10.0.0.2", 443)).handshake()
    conv.send(True, tls_record(22, body[:40]) + tls_record(22, body[40:]))
    (rec,) = _ssl(_run(conv.close().packets))
    assert rec.server_name == "two.records"
    assert rec.established is False  # logged at the end of the flow


def test_tls12_with_ecdhe_key_exchange_reports_the_curve() -> None:
    ske = b"\x03\x00\x17" + b"\x41" + b"\x04" * 65  # named_curve secp256r1
    sh = server_hello(
        cipher=0xC02F, selected=None, group=None, alpn=b"http/1.1", session_id=b"\x07" * 32
    )
    flight = handshake(2, sh) + handshake(11, b"\0\0\0") + handshake(12, ske) + handshake(14, b"")
    conv = TcpConversation(server=("10.0.0.2", 8443)).handshake()
    conv.send(
        True, tls_record(22, handshake(1, client_hello(versions=(), session_id=b"\x07" * 32)))
    )
    conv.send(False, tls_record(22, flight, version=0x0303))
    conv.send(True, tls_record(20, b"\x01") + tls_record(22, b"\0" * 40))
    conv.send(False, tls_record(20, b"\x01") + tls_record(22, b"\0" * 40))
    (rec,) = _ssl(_run(conv.close().packets))
    assert (rec.version, rec.cipher, rec.curve, rec.next_protocol) == (
        "TLSv12",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "secp256r1",
        "http/1.1",
    )
    assert (rec.resumed, rec.established) == (True, True)


def test_hello_retry_request_then_real_server_hello() -> None:
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    hrr = bytearray(server_hello(cipher=0x1301, group=23))
    hrr[2:34] = hrr_random
    conv = TcpConversation(server=("10.0.0.2", 443)).handshake()
    conv.send(True, tls_record(22, handshake(1, client_hello())))
    conv.send(False, tls_record(22, handshake(2, bytes(hrr))) + tls_record(20, b"\x01"))
    conv.send(
        True, tls_record(20, b"\x01") + tls_record(22, handshake(1, client_hello(groups=(23,))))
    )
    conv.send(False, tls_record(22, handshake(2, server_hello(cipher=0x1301, group=23))))
    conv.send(False, tls_record(23, b"\0" * 20))
    conv.send(True, tls_record(23, b"\0" * 20))
    (rec,) = _ssl(_run(conv.close().packets))
    assert (rec.version, rec.curve, rec.established) == ("TLSv13", "secp256r1", True)


def test_tls_detected_by_content_on_an_odd_port_and_junk_on_443_is_not_tls() -> None:
    ch = tls_record(22, handshake(1, client_hello()))
    odd = TcpConversation(server=("10.0.0.2", 5555)).handshake().send(True, ch).close()
    assert len(_ssl(_run(odd.packets))) == 1
    junk = TcpConversation(server=("10.0.0.2", 443)).handshake().send(True, b"hello there!")
    records = _run(junk.close().packets)
    assert _ssl(records) == []
    assert [c.service for c in records if isinstance(c, Conn)] == [None]


def test_gap_in_the_handshake_logs_what_was_seen_with_a_weird() -> None:
    ch = tls_record(22, handshake(1, client_hello(sni="gap.test")))
    conv = TcpConversation(server=("10.0.0.2", 443)).handshake().send(True, ch)
    conv.skip(False, 100).send(False, b"\x16\x03\x03\x00\x10" + b"\0" * 16).close()
    records = _run(conv.packets)
    assert [r.server_name for r in _ssl(records)] == ["gap.test"]
    assert "content_gap" in {w.name for w in records if isinstance(w, Weird)}


# -- published vectors and other tools' outputs ------------------------------------------------


def _rust_snapshot_ja4(path: Path) -> dict[tuple[str, int], str]:
    """(src, src_port) -> ja4 from a FoxIO Rust insta snapshot (YAML, read with a regex)."""
    out: dict[tuple[str, int], str] = {}
    for block in path.read_text().split("- stream:")[1:]:
        src = re.search(r"\n  src: (\S+)", block)
        port = re.search(r"\n  src_port: (\d+)", block)
        fp = re.search(r"\n  ja4: (\S+)", block)
        if src and port and fp:
            out[(src.group(1), int(port.group(1)))] = fp.group(1)
    return out


def _expected_ja4(pcap: str) -> dict[tuple[str, int], str]:
    entries = json.loads((VECTORS / f"{pcap}.json").read_text())
    expected = {(e["src"], int(e["srcport"])): e["JA4.1"] for e in entries if "JA4.1" in e}
    snapshot = VECTORS / f"{pcap}.rust.snap"
    if snapshot.exists():
        for key, value in _rust_snapshot_ja4(snapshot).items():
            expected.setdefault(key, value)
    return expected


# Every FoxIO pcap copied here that has TLS ClientHellos over TCP. Left out on purpose:
# quic-tls-handshake.pcapng (QUIC: the ClientHello is inside encrypted QUIC CRYPTO frames,
# which we do not decrypt; the tls-sni/tls-handshake/tls3 captures' QUIC flows are skipped
# the same way, their TCP flows are all checked); socks4-https.pcap (the ClientHello follows
# a SOCKS4 handshake; neither FoxIO tool prints a JA4 for it, and we do not parse SOCKS).
JA4_PCAPS = [
    "badcurveball.pcap",
    "browsers-x509.pcapng",
    "https-connect.pcap",  # after an HTTP CONNECT: only the Rust snapshot has its JA4
    "ipv6.pcapng",
    "latest.pcapng",
    "macos_tcp_flags.pcap",
    "tls-alpn-h2.pcap",
    "tls-handshake.pcapng",
    "tls-non-ascii-alpn.pcapng",
    "tls-sni.pcapng",
    "tls12.pcap",
    "tls3.pcapng",
]


@pytest.mark.parametrize("pcap", JA4_PCAPS)
def test_ja4_matches_foxio_published_vectors(pcap: str) -> None:
    expected = _expected_ja4(pcap)
    assert expected, f"no vectors for {pcap}"
    ours = {(r.orig_h, r.orig_p): r.ja4 for r in _ssl(list(iter_records(DATA / pcap)))}
    mismatches = {k: (ours.get(k), v) for k, v in expected.items() if ours.get(k) != v}
    assert mismatches == {}
    assert set(ours) == set(expected)  # and no TLS client the vectors do not know of


def _suricata_checks(name: str) -> list[dict[str, str]]:
    """The ``match`` blocks of a Suricata test.yaml, as flat key -> value (quotes stripped)."""
    blocks: list[dict[str, str]] = []
    for chunk in (DATA / "suricata-expected" / f"{name}.test.yaml").read_text().split("- filter:"):
        fields = dict(re.findall(r"^\s+([\w.\[\]]+): (.+)$", chunk, re.MULTILINE))
        blocks.append({k: v.strip().strip('"') for k, v in fields.items()})
    return [b for b in blocks if any(k.startswith("tls.") for k in b)]


@pytest.mark.parametrize(
    ("test", "pcap"),
    [
        ("tls13-draft14", "sv-tls13-draft14.pcap"),
        ("tls13-draft18", "sv-tls13-draft18.pcap"),
        ("tls13-draft19", "sv-tls13-draft19.pcap"),
        ("tls13-draft22", "sv-tls13-draft22.pcap"),
        ("tls13-draft23", "sv-tls13-draft23.pcap"),
        ("tls13-draft28", "sv-tls13-draft28.pcap"),
        ("tls-duplicate-hello", "sv-tls-duplicate-hello.pcap"),
        ("tls-ja3s", "sv-tls-certs-alert.pcap"),
        ("ja4-tls", "sv-ja4-tls.pcap"),
    ],
)
def test_fingerprints_match_suricata_verify_expectations(test: str, pcap: str) -> None:
    ours = _ssl(list(iter_records(DATA / pcap)))
    checks = _suricata_checks(test)
    assert checks
    for check in checks:
        wanted = {
            "tls.ja3.hash": "ja3",
            "tls.ja3s.hash": "ja3s",
            "tls.ja4": "ja4",
            "tls.sni": "server_name",
        }
        for key, attr in wanted.items():
            if key in check:
                assert check[key] in {getattr(r, attr) for r in ours}, (key, check[key])


def _zeek_ssl(baseline: str) -> list[dict[str, str]]:
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in (DATA / "zeek-baselines" / baseline).read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


@pytest.mark.parametrize(
    ("pcap", "baseline"),
    [
        ("zeek-tls-conn-with-extensions.pcap", "scripts.base.protocols.ssl.basic.ssl.log"),
        ("zeek-tls1.2.pcap", "scripts.base.protocols.ssl.tls-1.2.ssl.log"),
        (
            "zeek-tls13-ech.pcap",
            "scripts.base.protocols.ssl.tls13-encrypted-client-hello.ssl.log",
        ),
    ],
)
def test_ssl_records_match_zeek_ssl_log(pcap: str, baseline: str) -> None:
    ours = {(r.orig_h, r.orig_p): r for r in _ssl(list(iter_records(DATA / pcap)))}
    rows = _zeek_ssl(baseline)
    assert len(ours) == len(rows)
    for row in rows:
        rec = ours[(row["id.orig_h"], int(row["id.orig_p"]))]

        def opt(name: str, row: dict[str, str] = row) -> str | None:
            return None if row[name] == "-" else row[name]

        assert (rec.resp_h, rec.resp_p) == (row["id.resp_h"], int(row["id.resp_p"]))
        assert rec.version == opt("version")
        assert rec.cipher == opt("cipher")
        assert rec.curve == opt("curve")
        assert rec.server_name == opt("server_name")
        assert rec.resumed == (row["resumed"] == "T")
        assert rec.next_protocol == opt("next_protocol")
        assert rec.established == (row["established"] == "T")


def test_demo_capture_tls13_handshake() -> None:
    recs = _ssl(list(iter_records(Path(__file__).parents[2] / "src/a2z/demo/data/attack.pcap")))
    assert [(r.server_name, r.version, r.established) for r in recs] == [
        ("www.example.test", "TLSv13", True)
    ]
    assert recs[0].ja3 == "0149f47eabf9a20d0893e2a44e5a6323"  # tshark's tls.handshake.ja3
    assert recs[0].ja3s == "15af977ce25de452b96affa2addb1036"  # tshark's tls.handshake.ja3s


def test_handshake_message_beyond_the_bound_is_not_buffered_and_is_reported() -> None:
    huge = tls_record(22, b"\x01\x02\x00\x00" + b"\0" * 1000)  # claims a 128 KiB ClientHello
    conv = TcpConversation(server=("10.0.0.2", 443)).handshake().send(True, huge).close()
    records = _run(conv.packets)
    assert "SSL_handshake_too_long" in {w.name for w in records if isinstance(w, Weird)}
    assert _ssl(records) == []
