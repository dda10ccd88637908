#!/usr/bin/env bash
# make-demo-capture.sh — re-create src/a2z/demo/data/attack.pcap
#
# Builds two throwaway network namespaces joined by a veth pair:
#
#     a2z-atk  veth-atk 10.66.0.10/24  <---->  veth-vic 10.66.0.20/24  a2z-vic
#     (attacker / client)                       (victim / server)
#
# The victim runs a stdlib DNS responder (udp/53), a stdlib HTTP server (80)
# and `openssl s_server` (443) with a throwaway self-signed certificate;
# 22/23 and everything else is closed, so scans meet RSTs.  tcpdump captures
# on veth-vic while the attacker namespace runs real tools (dig, curl, nmap,
# hping3): benign DNS/HTTP/TLS, port scans, a bounded SYN flood, DNS
# tunnelling- and DGA-like lookups, web attacks and periodic beaconing.
#
# All traffic stays inside the two namespaces: neither has a default route
# and the veth pair is the only link between them.  Every loop and tool run
# is bounded in count and time; the whole run takes well under a minute.
#
# Usage:  sudo scripts/make-demo-capture.sh [OUTPUT.pcap]
#         (default output: src/a2z/demo/data/attack.pcap in this repository)
#
# Needs: root, iproute2, ethtool, tcpdump, python3, openssl, dig, curl,
#        nmap, hping3; capinfos/tshark (optional) for the summary and checks.
set -euo pipefail

ATK_NS=a2z-atk
VIC_NS=a2z-vic
ATK_IF=veth-atk
VIC_IF=veth-vic
ATK_IP=10.66.0.10
VIC_IP=10.66.0.20
ATK_MAC=02:66:00:00:00:10
VIC_MAC=02:66:00:00:00:20
SNI_NAME=www.example.test
PYTHON=${PYTHON:-python3}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-"$REPO_ROOT/src/a2z/demo/data/attack.pcap"}

log() { printf '[make-demo-capture] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, raw sockets): sudo $0"
for tool in ip ethtool tcpdump "$PYTHON" openssl dig curl nmap hping3 ss timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done

WORK=""
PIDS=()

kill_ns_procs() {
    # Processes left in *our* namespaces (e.g. by an interrupted earlier run).
    local ns=$1 pid
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill "$pid" 2>/dev/null || true
    done
    sleep 0.2
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -9 "$pid" 2>/dev/null || true
    done
}

teardown_ns() {
    local ns
    for ns in "$ATK_NS" "$VIC_NS"; do
        kill_ns_procs "$ns"
        if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    teardown_ns
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

A() { ip netns exec "$ATK_NS" "$@"; }
V() { ip netns exec "$VIC_NS" "$@"; }

# --------------------------------------------------------------------------
# 0. fresh start (idempotent): remove leftovers of an earlier run
# --------------------------------------------------------------------------
teardown_ns
WORK=$(mktemp -d /tmp/a2z-demo-capture.XXXXXX)
chmod 0755 "$WORK"
PCAP="$WORK/attack.pcap"

# --------------------------------------------------------------------------
# 1. namespaces + veth
# --------------------------------------------------------------------------
log "creating namespaces $ATK_NS / $VIC_NS"
ip netns add "$ATK_NS"
ip netns add "$VIC_NS"
for ns in "$ATK_NS" "$VIC_NS"; do
    # IPv4 only: keeps IPv6 router solicitations / MLD noise out of the capture.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$ns" ip link set lo up
done
ip link add "$ATK_IF" netns "$ATK_NS" address "$ATK_MAC" type veth \
    peer name "$VIC_IF" netns "$VIC_NS" address "$VIC_MAC"
A ip addr add "$ATK_IP/24" dev "$ATK_IF"
V ip addr add "$VIC_IP/24" dev "$VIC_IF"
# No offloads: every captured frame is a real on-the-wire frame with a
# correct checksum (veth otherwise leaves partial checksums / GSO blobs).
for pair in "$ATK_NS:$ATK_IF" "$VIC_NS:$VIC_IF"; do
    ns=${pair%%:*} dev=${pair#*:}
    for feat in tx sg tso gso gro; do
        ip netns exec "$ns" ethtool -K "$dev" "$feat" off >/dev/null 2>&1 || true
    done
done
A ip link set "$ATK_IF" up
V ip link set "$VIC_IF" up
# Horizontal sweep targets 10.66.0.21-30 do not exist. Give them static
# (never-answering) neighbour entries so the scanner's SYNs really go out on
# the wire and into the capture instead of dying in ARP resolution (nmap is
# run with -Pn --send-ip for the sweep so it uses the kernel's neighbours).
for i in $(seq 21 30); do
    A ip neigh replace "10.66.0.$i" lladdr "$(printf '02:66:00:00:01:%02x' "$i")" \
        dev "$ATK_IF" nud permanent
done

# --------------------------------------------------------------------------
# 2. victim services
# --------------------------------------------------------------------------
cat >"$WORK/dns_server.py" <<'PY'
"""Tiny authoritative-style DNS responder (stdlib only) for the demo capture."""
import hashlib
import base64
import socket
import struct
import sys

A, NS, SOA, MX, TXT, AAAA, OPT = 1, 2, 6, 15, 16, 28, 41
IP4, IP6 = sys.argv[1], "fd66::20"
TUNNEL = "t.evil-tunnel.test"


def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def txt(s):
    b = s.encode()
    return b"".join(bytes([len(b[i:i + 255])]) + b[i:i + 255] for i in range(0, len(b), 255))


def soa(mname, rname, serial=2026112701):
    return name(mname) + name(rname) + struct.pack(">IIIII", serial, 3600, 600, 86400, 300)


ZONES = {
    "example.test": soa("ns1.example.test", "hostmaster.example.test"),
    "evil-tunnel.test": soa("ns1.evil-tunnel.test", "root.evil-tunnel.test"),
    "com": soa("a.gtld-servers.net", "nstld.verisign-grs.com"),
}
RECORDS = {
    ("example.test", A): [socket.inet_aton(IP4)],
    ("example.test", MX): [struct.pack(">H", 10) + name("mail.example.test")],
    ("example.test", TXT): [txt("v=spf1 ip4:10.66.0.0/24 -all")],
    ("example.test", NS): [name("ns1.example.test")],
    ("www.example.test", A): [socket.inet_aton(IP4)],
    ("www.example.test", AAAA): [socket.inet_pton(socket.AF_INET6, IP6)],
    ("mail.example.test", A): [socket.inet_aton(IP4)],
    ("ns1.example.test", A): [socket.inet_aton(IP4)],
    ("updates.example.test", A): [socket.inet_aton(IP4)],
}


def zone_of(q):
    for z in sorted(ZONES, key=len, reverse=True):
        if q == z or q.endswith("." + z):
            return z
    return q.rsplit(".", 1)[-1]


def lookup(q, qtype):
    """-> (rcode, answers[(type, rdata)], authority[(owner, type, rdata)])"""
    if q == TUNNEL or q.endswith("." + TUNNEL):
        # tunnel "server": every name exists, TXT carries an encoded "reply"
        if qtype == TXT:
            blob = base64.b32encode(hashlib.sha256(q.encode()).digest()).decode()
            return 0, [(TXT, txt(blob.rstrip("=").lower()))], []
        if qtype == A:
            return 0, [(A, socket.inet_aton(IP4))], []
        return 0, [], [("evil-tunnel.test", SOA, ZONES["evil-tunnel.test"])]
    names = {n for n, _ in RECORDS}
    if (q, qtype) in RECORDS:
        return 0, [(qtype, r) for r in RECORDS[(q, qtype)]], []
    z = zone_of(q)
    auth = [(z, SOA, ZONES.get(z, soa("ns." + z, "hostmaster." + z)))]
    return (0 if q in names else 3), [], auth


def handle(data):
    if len(data) < 12:
        return None
    qid, flags, qd, _an, _ns, ar = struct.unpack(">HHHHHH", data[:12])
    if flags & 0x8000 or qd != 1:
        return None
    i, labels = 12, []
    while data[i]:
        ln = data[i]
        labels.append(data[i + 1:i + 1 + ln].decode("ascii", "replace"))
        i += 1 + ln
    qtype, _qclass = struct.unpack(">HH", data[i + 1:i + 5])
    question = data[12:i + 5]
    q = ".".join(labels).lower()
    rcode, answers, authority = lookup(q, qtype)
    rd = flags & 0x0100
    rflags = 0x8000 | (flags & 0x7800) | 0x0400 | rd | 0x0080 | rcode
    body = question
    for rtype, rdata in answers:
        body += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata
    for owner, rtype, rdata in authority:
        body += name(owner) + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata
    opt = b""
    if ar:  # client sent EDNS (dig does): answer with a plain OPT record
        opt = b"\x00" + struct.pack(">HHIH", OPT, 1232, 0, 0)
    hdr = struct.pack(">HHHHHH", qid, rflags, 1, len(answers), len(authority), 1 if opt else 0)
    return hdr + body + opt


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((IP4, 53))
    print("dns ready", flush=True)
    while True:
        data, peer = s.recvfrom(4096)
        try:
            resp = handle(data)
        except (IndexError, struct.error, UnicodeError):
            resp = None
        if resp:
            s.sendto(resp, peer)


main()
PY

cat >"$WORK/http_server.py" <<'PY'
"""Small stdlib HTTP server for the demo capture: answers 200 / 401 / 404."""
import base64
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INDEX = (b"<!doctype html><html><head><title>Example Corp</title></head>"
         b"<body><h1>Example Corp intranet</h1><p>Welcome.</p>"
         b"<a href=\"/products?id=1\">Products</a></body></html>\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-httpd/1.0"
    sys_version = ""

    def reply(self, code, body, ctype="text/html; charset=utf-8", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self.reply(200, INDEX)
        elif path == "/robots.txt":
            self.reply(200, b"User-agent: *\nDisallow: /admin\n", "text/plain")
        elif path == "/products":
            self.reply(200, b"<html><body><h1>Product 1</h1><p>Widget, 9.99 EUR</p></body></html>\n")
        elif path == "/beacon":
            self.reply(200, b'{"status":"ok","task":"sleep","interval":1}\n', "application/json")
        elif path.startswith("/admin"):
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                try:
                    ok = base64.b64decode(auth[6:]).decode() == "admin:hunter2"
                except ValueError:
                    ok = False
            if ok:
                self.reply(200, b"<html><body><h1>Admin console</h1></body></html>\n")
            else:
                self.reply(401, b"<html><body><h1>401 Unauthorized</h1></body></html>\n",
                           headers=[("WWW-Authenticate", 'Basic realm="admin"')])
        else:
            self.reply(404, b"<html><body><h1>404 Not Found</h1></body></html>\n")

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


srv = ThreadingHTTPServer((sys.argv[1], 80), Handler)
print("http ready", flush=True)
srv.serve_forever()
PY

log "generating throwaway self-signed certificate for $SNI_NAME"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
    -subj "/CN=$SNI_NAME" -addext "subjectAltName=DNS:$SNI_NAME" >/dev/null 2>&1

log "starting victim services (dns/53, http/80, tls/443)"
# (background jobs call `ip netns exec` directly, not via V(), so that $! is
#  the server process itself and not a wrapping subshell)
ip netns exec "$VIC_NS" "$PYTHON" -u "$WORK/dns_server.py" "$VIC_IP" >"$WORK/dns.log" 2>&1 &
PIDS+=($!)
ip netns exec "$VIC_NS" "$PYTHON" -u "$WORK/http_server.py" "$VIC_IP" >"$WORK/http.log" 2>&1 &
PIDS+=($!)
ip netns exec "$VIC_NS" openssl s_server -accept "$VIC_IP:443" -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
    -www -quiet </dev/null >"$WORK/tls.log" 2>&1 &
PIDS+=($!)

wait_listen() {  # wait_listen -t|-u PORT
    local i
    for i in $(seq 1 50); do
        if V ss -Hln "$1" "sport = :$2" | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "victim service on port $2 did not come up (see $WORK/*.log)"
}
wait_listen -u 53
wait_listen -t 80
wait_listen -t 443

# --------------------------------------------------------------------------
# 3. capture
# --------------------------------------------------------------------------
log "starting tcpdump on $VIC_NS/$VIC_IF"
ip netns exec "$VIC_NS" tcpdump -i "$VIC_IF" -n -s 262144 -U -Z root -w "$PCAP" >"$WORK/tcpdump.log" 2>&1 &
TCPDUMP_PID=$!
PIDS+=("$TCPDUMP_PID")
for _ in $(seq 1 50); do
    grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "listening on" "$WORK/tcpdump.log" || die "tcpdump did not start: $(cat "$WORK/tcpdump.log")"
sleep 0.3

DIG=(timeout 5 dig "@$VIC_IP" +tries=1 +time=2)
CURL=(timeout 10 curl -sS --max-time 5 -o /dev/null -w '%{http_code}')
BROWSER_UA="Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
pause() { sleep 0.5; }

# --- 1. benign ------------------------------------------------------------
log "1/6 benign DNS / HTTP / TLS"
A "${DIG[@]}" +short A www.example.test
A "${DIG[@]}" +short AAAA www.example.test
A "${DIG[@]}" +short MX example.test
A "${DIG[@]}" +short TXT example.test
A "${DIG[@]}" +short A mail.example.test
echo "  GET / -> $(A "${CURL[@]}" -A "$BROWSER_UA" --resolve "$SNI_NAME:80:$VIC_IP" "http://$SNI_NAME/")"
echo "  GET /robots.txt -> $(A "${CURL[@]}" -A "$BROWSER_UA" --resolve "$SNI_NAME:80:$VIC_IP" "http://$SNI_NAME/robots.txt")"
echo "  GET https:/ -> $(A "${CURL[@]}" -k -A "$BROWSER_UA" --resolve "$SNI_NAME:443:$VIC_IP" "https://$SNI_NAME/")"
pause

# --- 2. scans -------------------------------------------------------------
log "2/6 nmap: SYN scan 1-1024, connect scan top-50, horizontal sweep"
A timeout 30 nmap -n -e "$ATK_IF" -T4 -sS -p 1-1024 "$VIC_IP" | grep -E '^[0-9]+/|scanned' || true
A timeout 30 nmap -n -e "$ATK_IF" -T4 -sT --top-ports 50 "$VIC_IP" | grep -E '^[0-9]+/|scanned' || true
A timeout 30 nmap -n -e "$ATK_IF" -T4 -Pn --send-ip -sS -p 22,80,443,445 --max-retries 0 --host-timeout 5s \
    10.66.0.20-30 | grep -E 'scanned' || true
pause

# --- 3. floods ------------------------------------------------------------
log "3/6 hping3: bounded SYN flood (1500 x 0.5 ms) + 20 ICMP echo"
A timeout 20 hping3 -I "$ATK_IF" -q -S -p 80 -c 1500 -i u500 "$VIC_IP" 2>&1 | grep -E 'packets' || true
A timeout 10 hping3 -I "$ATK_IF" -q --icmp -c 20 -i u10000 "$VIC_IP" 2>&1 | grep -E 'packets' || true
pause

# --- 4. DNS tunnelling-like and DGA-like lookups ---------------------------
log "4/6 DNS: 30 tunnel-like TXT queries, 20 DGA-like NXDOMAIN queries"
# Seeded, so a regeneration asks the same names.
"$PYTHON" - >"$WORK/names.txt" <<'PY'
import random, base64, string
r = random.Random(20261127)
for i in range(30):
    if i % 3 == 2:   # hex-encoded chunk
        label = "".join(r.choice("0123456789abcdef") for _ in range(50))
    else:            # base32-encoded chunk
        label = base64.b32encode(bytes(r.randrange(256) for _ in range(35))).decode().lower()[:50]
    print("tunnel", label + ".t.evil-tunnel.test")
for _ in range(20):
    print("dga", "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(12, 20))) + ".com")
PY
n_tun=0 n_dga=0
while read -r kind qname; do
    if [[ $kind == tunnel ]]; then
        A "${DIG[@]}" +short TXT "$qname" >/dev/null; n_tun=$((n_tun + 1))
    else
        A "${DIG[@]}" +noall A "$qname" >/dev/null; n_dga=$((n_dga + 1))
    fi
done <"$WORK/names.txt"
echo "  tunnel queries: $n_tun, dga queries: $n_dga"
pause

# --- 5. web attacks -------------------------------------------------------
log "5/6 web attacks: scanner UAs, traversal, SQLi, wp-login, basic auth"
W="http://$VIC_IP"
web() {  # web LABEL curl-args...
    local label=$1; shift
    echo "  $label -> $(A "${CURL[@]}" "$@")"
}
web "sqlmap SQLi"        -A "sqlmap/1.7.2#stable (https://sqlmap.org)" "$W/products?id=1%27%20OR%20%271%27%3D%271"
web "sqlmap UNION"       -A "sqlmap/1.7.2#stable (https://sqlmap.org)" "$W/products?id=1%20UNION%20ALL%20SELECT%20NULL%2Cusername%2Cpassword%20FROM%20users--%20-"
web "SQLi raw quotes"    -A "$BROWSER_UA" "$W/products?id=1'+OR+'1'='1"
web "Nikto /"            -A "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:Port Check)" "$W/"
web "Nikto wp-login"     -A "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:007335)" "$W/wp-login.php"
web "Nikto .env"         -A "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:007391)" "$W/.env"
web "masscan"            -A "masscan/1.3 (https://github.com/robertdavidgraham/masscan)" "$W/"
web "zgrab"              -A "Mozilla/5.0 zgrab/0.x" "$W/"
web "traversal"          -A "$BROWSER_UA" --path-as-is "$W/../../etc/passwd"
web "traversal encoded"  -A "$BROWSER_UA" --path-as-is "$W/static/..%2f..%2f..%2fetc%2fpasswd"
web "wp-login probe"     -A "$BROWSER_UA" "$W/wp-login.php"
web "admin no auth"      -A "$BROWSER_UA" "$W/admin"
web "admin basic auth"   -A "$BROWSER_UA" -u admin:hunter2 "$W/admin"
pause

# --- 6. beaconing ---------------------------------------------------------
log "6/6 beaconing: 8 x GET /beacon every 1 s"
BEACON_UA="Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.1; a2zbeacon)"
for i in $(seq 1 8); do
    code=$(A "${CURL[@]}" -A "$BEACON_UA" "$W/beacon?id=7f3c9a21&seq=$i")
    printf '  beacon %d -> %s\n' "$i" "$code"
    if [[ $i -lt 8 ]]; then sleep 1; fi
done

sleep 1
# SIGTERM, not SIGINT: background jobs of a non-interactive shell ignore SIGINT.
kill -TERM "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
log "tcpdump: $(grep -E 'captured|received|dropped' "$WORK/tcpdump.log" | tr '\n' ' ')"

# --------------------------------------------------------------------------
# 4. publish + summary
# --------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
install -m 0644 "$PCAP" "$OUT"
if [[ -n ${SUDO_UID:-} && -n ${SUDO_GID:-} ]]; then
    chown "$SUDO_UID:$SUDO_GID" "$OUT"
fi
log "wrote $OUT ($(stat -c %s "$OUT") bytes)"

if command -v capinfos >/dev/null 2>&1; then
    capinfos -c -s -u -T -M "$OUT" 2>/dev/null || capinfos "$OUT"
elif command -v tshark >/dev/null 2>&1; then
    tshark -r "$OUT" -q -z io,phs
fi

if command -v tshark >/dev/null 2>&1; then
    count() { tshark -r "$OUT" -Y "$1" 2>/dev/null | wc -l; }
    fail=0
    check() {  # check LABEL FILTER MIN
        local n; n=$(count "$2")
        printf '  %-34s %6d  (%s)\n' "$1" "$n" "$2"
        [[ $n -ge $3 ]] || { log "check failed: $1 ($2) = $n < $3"; fail=1; }
    }
    echo "per-category check:"
    check "DNS queries"                 "dns.flags.response==0" 55
    check "DNS responses"               "dns.flags.response==1" 55
    check "DNS NXDOMAIN"                "dns.flags.rcode==3" 20
    check "DNS tunnel TXT answers"      'dns.flags.response==1 && dns.qry.name contains "evil-tunnel" && dns.txt' 30
    check "HTTP requests"               "http.request" 20
    check "HTTP responses"              "http.response" 20
    check "TLS ClientHello with SNI"    "tls.handshake.type==1 && tls.handshake.extensions_server_name" 1
    check "TCP SYN (no ACK)"            "tcp.flags.syn==1 && tcp.flags.ack==0" 2500
    check "TCP RST from victim"         "tcp.flags.reset==1 && ip.src==$VIC_IP" 1000
    check "SYNs to absent hosts (.21-30)" "tcp.flags.syn==1 && ip.dst>=10.66.0.21 && ip.dst<=10.66.0.30" 10
    check "ICMP echo requests"          "icmp.type==8" 20
    check "HTTP Basic auth"             "http.authorization" 1
    check "beacon requests"             'http.request.uri contains "/beacon"' 8
    [[ $fail -eq 0 ]] || die "capture is missing expected traffic"
fi
log "done"
