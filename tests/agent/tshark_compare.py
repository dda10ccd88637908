"""Field-by-field agreement of our dns/http/ssl records with tshark on the same capture.

tshark dissects messages; we log transactions. Both sides are keyed by conversation (the
unordered pair of endpoints plus the transport) so a flow split differently still lines up:

- DNS: every DNS message tshark sees is looked up among our records of the same conversation
  and transaction id; the query name must be there, and qtype, rcode and the rendered answers
  (Zeek's rendering, rebuilt from tshark's fields) must agree.
- HTTP: per conversation, tshark's requests in order against our records by ``trans_depth``:
  method, host, uri, and the status code of the response tshark pairs with the request.
- TLS: per conversation, the first ClientHello's SNI, JA3 and the last ServerHello's JA3S.

A :class:`Tally` counts agreements per field and keeps every disagreement for the message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2z.agent.replay import iter_records
from a2z.records import Dns, Http, Record, Ssl

ConvKey = tuple[str, tuple[tuple[str, int], tuple[str, int]]]


def conv_key(proto: str, a: str, ap: int, b: str, bp: int) -> ConvKey:
    """The unordered conversation key both sides share."""
    ends = sorted([(a, ap), (b, bp)])
    return proto, (ends[0], ends[1])


def tshark() -> str:
    """Path of tshark, or fail the test (CI installs it)."""
    path = shutil.which("tshark")
    if path is None:
        raise AssertionError(
            "tshark is not installed; .ci/run installs it (apt-get install tshark)"
        )
    return path


def run_json(
    path: Path, display_filter: str, protocols: str, extra: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """tshark's JSON of the frames matching ``display_filter``: a list of ``layers`` dicts."""
    args = [tshark(), "-n", "-r", str(path), *extra, "-Y", display_filter, "-T", "json"]
    args += ["--no-duplicate-keys", "-J", protocols]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    return [pkt["_source"]["layers"] for pkt in json.loads(done.stdout or "[]")]


def run_fields(
    path: Path, display_filter: str, fields: list[str], extra: tuple[str, ...] = ()
) -> list[dict[str, str]]:
    """tshark's ``-T fields`` output as one dict per frame (repeated values comma-joined).

    ``extra`` goes on tshark's command line, e.g. ``("-d", "tcp.port==8443,tls")``.
    """
    args = [tshark(), "-n", "-r", str(path), *extra, "-Y", display_filter, "-T", "fields"]
    args += ["-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in fields:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in done.stdout.splitlines()]


@dataclass
class Tally:
    """Agreement counts per field, with the disagreements kept for the failure message."""

    agree: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    diffs: list[str] = field(default_factory=list)

    def check(self, name: str, ours: object, theirs: object, where: str) -> bool:
        self.total[name] += 1
        if ours == theirs:
            self.agree[name] += 1
            return True
        self.diffs.append(f"{where}: {name}: ours={ours!r} tshark={theirs!r}")
        return False

    def ratio(self, name: str) -> float:
        return self.agree[name] / self.total[name] if self.total[name] else 1.0

    def merge(self, other: Tally) -> None:
        for name, n in other.total.items():
            self.total[name] += n
            self.agree[name] += other.agree[name]
        self.diffs += other.diffs

    def summary(self) -> str:
        return ", ".join(
            f"{name} {self.agree[name]}/{n} ({100 * self.ratio(name):.2f}%)"
            for name, n in sorted(self.total.items())
        )


def records_of(path: Path) -> list[Record]:
    return list(iter_records(path))


# -- DNS ---------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _section(dns: dict[str, Any], name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in _as_list(dns.get(name)):
        if isinstance(entry, dict):
            for rr in entry.values():
                out += [x for x in _as_list(rr) if isinstance(x, dict)]
    return out


def _tname(name: str) -> str:
    return "" if name == "<Root>" else name.lower()


def zeek_answer(rr: dict[str, Any]) -> str | None:
    """The answer text Zeek (and we) log for one tshark answer RR; None = not logged."""
    rtype = int(rr["dns.resp.type"])
    if rtype == 1:
        return str(rr["dns.a"])
    if rtype == 28:
        return str(rr["dns.aaaa"])
    simple = {
        5: "dns.cname",
        2: "dns.ns",
        12: "dns.ptr.domain_name",
        15: "dns.mx.mail_exchange",
        6: "dns.soa.mname",
        33: "dns.srv.target",
    }
    if rtype in simple:
        return _tname(str(rr[simple[rtype]])) or None
    if rtype in (16, 99):
        tag = "TXT" if rtype == 16 else "SPF"
        strings = _as_list(rr.get("dns.txt") if rtype == 16 else rr.get("dns.spf"))
        lengths = _as_list(rr.get("dns.txt.length") if rtype == 16 else rr.get("dns.spf.length"))
        return " ".join(f"{tag} {n} {s}" for n, s in zip(lengths, strings, strict=True))
    if rtype == 46:
        signer = _tname(str(rr["dns.rrsig.signers_name"])) or "<Root>"
        return f"RRSIG {int(rr['dns.rrsig.type_covered'])} {signer}"
    if rtype == 48:
        return f"DNSKEY {int(rr['dns.dnskey.algorithm'])}"
    if rtype == 43:
        return f"DS {int(rr['dns.ds.algorithm'])} {int(rr['dns.ds.digest_type'])}"
    if rtype == 47:
        return f"NSEC {_tname(str(rr['dns.resp.name']))} {_tname(str(rr['dns.nsec.next_domain_name']))}"
    if rtype in (11, 13, 32, 41, 250):
        return None
    if rtype == 50:
        return "NSEC3"
    if rtype == 44:
        return "SSHFP: " + str(rr["dns.sshfp.fingerprint"]).replace(":", "")
    return "*"  # rendered by us, not rebuilt here: any text matches


def compare_dns(path: Path, records: Iterable[Record], extra: tuple[str, ...] = ()) -> Tally:
    """DNS messages seen by tshark against our dns records."""
    ours: dict[tuple[ConvKey, int], list[Dns]] = defaultdict(list)
    for r in records:
        if isinstance(r, Dns):
            ours[(conv_key(r.proto, r.orig_h, r.orig_p, r.resp_h, r.resp_p), r.trans_id)].append(r)
    tally = Tally()
    for layers in run_json(path, "dns && !icmp && !icmpv6", "frame ip ipv6 udp tcp dns", extra):
        proto = "tcp" if "tcp" in layers else "udp"
        transport = layers[proto]
        transport = transport[0] if isinstance(transport, list) else transport
        net = layers.get("ip") or layers.get("ipv6")
        net = net[0] if isinstance(net, list) else net
        v = "ip" if "ip" in layers else "ipv6"
        src, dst = net[f"{v}.src"], net[f"{v}.dst"]
        sport, dport = int(transport[f"{proto}.srcport"]), int(transport[f"{proto}.dstport"])
        key = conv_key(proto, src, sport, dst, dport)
        frame = layers["frame"]["frame.number"]
        for dns in _as_list(layers["dns"]):
            if "dns.id" not in dns:
                continue
            _compare_message(tally, ours, key, dns, f"{path.name}#{frame}")
    return tally


def _compare_message(
    tally: Tally,
    ours: dict[tuple[ConvKey, int], list[Dns]],
    key: ConvKey,
    dns: dict[str, Any],
    where: str,
) -> None:
    trans_id = int(dns["dns.id"], 16)
    flags = dns.get("dns.flags_tree", {})
    if int(flags.get("dns.flags.opcode", "0")) != 0:
        return  # like Zeek we log standard queries only
    questions = _section(dns, "Queries")
    if not questions:
        return
    qname = _tname(str(questions[0]["dns.qry.name"]))
    qtype = int(questions[0]["dns.qry.type"])
    candidates = [r for r in ours.get((key, trans_id), []) if (r.query or "") == qname]
    tally.check("dns.query", bool(candidates), True, f"{where} id={trans_id} {qname}")
    if not candidates:
        return
    tally.check("dns.qtype", candidates[0].qtype, qtype, f"{where} {qname}")
    if flags.get("dns.flags.response") != "1":
        return
    replies = [r for r in candidates if r.rcode is not None] or candidates
    rcode = int(flags["dns.flags.rcode"])
    expected = [zeek_answer(rr) for rr in _section(dns, "Answers")]
    answers = sorted(a for a in expected if a is not None)
    best = max(replies, key=lambda r: _same_answers(r.answers or [], answers))
    tally.check("dns.rcode", best.rcode, rcode, f"{where} {qname}")
    mine = sorted(best.answers or [])
    tally.check(
        "dns.answers",
        answers if _same_answers(mine, answers) else mine,
        answers,
        f"{where} {qname}",
    )


def _same_answers(mine: list[str], expected: list[str]) -> bool:
    """Equal as multisets, where an expected ``*`` stands for any one answer."""
    left = list(mine)
    wild = 0
    for answer in expected:
        if answer == "*":
            wild += 1
        elif answer in left:
            left.remove(answer)
        else:
            return False
    return len(left) == wild


# -- HTTP --------------------------------------------------------------------------------------

_HTTP_FIELDS = [
    "frame.number",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "http.request",
    "http.response",
    "http.request.method",
    "http.host",
    "http.request.uri",
    "http.response.code",
    "http.request_in",
]


def compare_http(path: Path, records: Iterable[Record], extra: tuple[str, ...] = ()) -> Tally:
    """tshark's HTTP requests (and the responses it pairs with them) against our http records."""
    ours: dict[ConvKey, list[Http]] = defaultdict(list)
    for r in records:
        if isinstance(r, Http):
            ours[conv_key("tcp", r.orig_h, r.orig_p, r.resp_h, r.resp_p)].append(r)
    requests: dict[ConvKey, list[dict[str, str]]] = defaultdict(list)
    status: dict[str, str] = {}
    for f in run_fields(path, "http && !icmp", _HTTP_FIELDS, extra):
        src = f["ip.src"] or f["ipv6.src"]
        dst = f["ip.dst"] or f["ipv6.dst"]
        key = conv_key("tcp", src, int(f["tcp.srcport"]), dst, int(f["tcp.dstport"]))
        if f["http.request.method"]:
            for method, uri in zip(
                f["http.request.method"].split(","), _split_uris(f), strict=False
            ):
                requests[key].append(
                    {
                        "frame": f["frame.number"],
                        "method": method,
                        "uri": uri,
                        "host": f["http.host"],
                    }
                )
        if f["http.response.code"] and f["http.request_in"]:
            for req, code in zip(
                f["http.request_in"].split(","), f["http.response.code"].split(","), strict=False
            ):
                status[req] = code
    tally = Tally()
    for key, reqs in requests.items():
        mine = sorted(ours.get(key, []), key=lambda r: (r.ts, r.trans_depth))
        mine = [r for r in mine if r.method is not None]
        for i, req in enumerate(reqs):
            where = f"{path.name}#{req['frame']}"
            rec = mine[i] if i < len(mine) else None
            tally.check("http.request", rec is not None, True, where)
            if rec is None:
                continue
            tally.check("http.method", rec.method, req["method"], where)
            tally.check("http.host", rec.host, req["host"] or None, where)
            tally.check("http.uri", rec.uri, req["uri"], where)
            code = status.get(req["frame"])
            if code is not None:
                tally.check("http.status_code", rec.status_code, int(code), where)
    return tally


def _split_uris(f: dict[str, str]) -> list[str]:
    # URIs may contain commas; with one request per frame (the common case) take it whole.
    uri = f["http.request.uri"]
    return [uri] if f["http.request.method"].count(",") == 0 else uri.split(",")


# -- TLS ---------------------------------------------------------------------------------------

_TLS_FIELDS = [
    "frame.number",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.ja3",
    "tls.handshake.ja3s",
]


def tshark_hellos(path: Path, extra: tuple[str, ...] = ()) -> dict[ConvKey, dict[str, str]]:
    """Per TCP conversation: first ClientHello's SNI and JA3, last ServerHello's JA3S."""
    out: dict[ConvKey, dict[str, str]] = {}
    hellos = "tcp && (tls.handshake.type == 1 || tls.handshake.type == 2)"
    for f in run_fields(path, hellos, _TLS_FIELDS, extra):
        src = f["ip.src"] or f["ipv6.src"]
        dst = f["ip.dst"] or f["ipv6.dst"]
        key = conv_key("tcp", src, int(f["tcp.srcport"]), dst, int(f["tcp.dstport"]))
        entry = out.setdefault(key, {"frame": f["frame.number"]})
        types = f["tls.handshake.type"].split(",")
        if "1" in types and "ja3" not in entry:
            entry["ja3"] = f["tls.handshake.ja3"].split(",")[0]
            entry["sni"] = f["tls.handshake.extensions_server_name"].split(",")[0]
        if "2" in types and f["tls.handshake.ja3s"]:
            entry["ja3s"] = f["tls.handshake.ja3s"].split(",")[-1]
    return out


def compare_tls(path: Path, records: Iterable[Record], extra: tuple[str, ...] = ()) -> Tally:
    """tshark's ClientHello/ServerHello fingerprints against our ssl records."""
    ours: dict[ConvKey, list[Ssl]] = defaultdict(list)
    for r in records:
        if isinstance(r, Ssl):
            ours[conv_key("tcp", r.orig_h, r.orig_p, r.resp_h, r.resp_p)].append(r)
    tally = Tally()
    for key, entry in tshark_hellos(path, extra).items():
        where = f"{path.name}#{entry['frame']}"
        mine = ours.get(key)
        tally.check("ssl.record", mine is not None, True, where)
        if not mine:
            continue
        rec = mine[0]
        if "ja3" in entry:
            tally.check("ssl.server_name", rec.server_name, entry["sni"] or None, where)
            tally.check("ssl.ja3", rec.ja3, entry["ja3"], where)
        if "ja3s" in entry:
            tally.check("ssl.ja3s", rec.ja3s, entry["ja3s"], where)
    return tally


def compare_all(path: Path) -> Tally:
    """Every comparison on one capture."""
    records = records_of(path)
    tally = compare_dns(path, records)
    tally.merge(compare_http(path, records))
    tally.merge(compare_tls(path, records))
    return tally


if __name__ == "__main__":  # a developer's view: python -m tests.agent.tshark_compare FILE...
    import sys

    grand = Tally()
    for name in sys.argv[1:]:
        one = compare_all(Path(name))
        print(f"{name}: {one.summary()}")
        for diff in one.diffs[:20]:
            print("   ", diff)
        grand.merge(one)
    print("ALL:", grand.summary())
