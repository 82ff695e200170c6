#!/usr/bin/env bash
# Captures real WCCPv2 Here-I-Am messages from Debian's Squid as test fixtures.
#
# For every variant below it writes wccp/tests/fixtures/squid/<variant>/squid.conf, runs
# Squid with exactly that file in a private network namespace (wccpfx-engine, 10.250.0.2),
# captures two Here-I-Am messages in a second namespace (wccpfx-router, 10.250.0.1) into
# <variant>/here-i-am.pcap, stops Squid, and finally checks each capture against the
# hand-written <variant>/expected.json using tshark's decoder (and an independent MD5
# check for the password variant).
#
# Usage, as root:  bash scripts/capture-squid-fixtures.sh [variant...]
# Needs: squid tshark tcpdump socat iproute2 python3 (scripts/setup.sh installs them).
# Takes about 15 s per variant. Idempotent; cleans up its namespaces and processes on any
# exit. Uses no address outside its own two namespaces.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$REPO/wccp/tests/fixtures/squid"
RUN=/tmp/wccpfx-run          # per-run state; fixed so squid.conf files are reproducible
LOCK=/tmp/wccpfx.lock
NS_E=wccpfx-engine
NS_R=wccpfx-router
IF_E=wccpfx-e                # veth end inside the engine namespace
IF_R=wccpfx-r                # veth end inside the router namespace
ENGINE_IP=10.250.0.2
ROUTER_IP=10.250.0.1
MAC_E=02:00:0a:fa:00:02
MAC_R=02:00:0a:fa:00:01
CAPTURE_TIMEOUT=40           # s; Squid sends at about +1 s after start, then every 10 s
PKTS=2

ALL_VARIANTS=(gre-hash l2-mask md5-password dynamic-ports ports-source udp weight)

log() { echo "capture-squid-fixtures: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces)"
for tool in squid tshark tcpdump socat ip python3 flock; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install -y squid tshark tcpdump socat iproute2)"
done

# One run at a time: the namespaces and $RUN are fixed names.
exec 9>"$LOCK"
flock -n 9 || die "another capture run holds $LOCK"

STARTED_PIDS=()

kill_pid() { # pid: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM, killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

teardown_netns() {
    local ns pid
    for ns in "$NS_E" "$NS_R"; do
        ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
        # Only processes inside our own namespaces (left over from an earlier, killed run).
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${STARTED_PIDS[@]}"; do
        kill_pid "$pid"
    done
    teardown_netns
    rm -rf "$RUN"
    [ $rc -eq 0 ] || log "failed (exit $rc); namespaces and processes cleaned up"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

setup_netns() {
    teardown_netns
    ip netns add "$NS_E"
    ip netns add "$NS_R"
    ip -n "$NS_E" link add "$IF_E" address "$MAC_E" type veth \
        peer name "$IF_R" address "$MAC_R" netns "$NS_R"
    ip -n "$NS_E" addr add "$ENGINE_IP/24" dev "$IF_E"
    ip -n "$NS_R" addr add "$ROUTER_IP/24" dev "$IF_R"
    for ns in "$NS_E" "$NS_R"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_E" link set "$IF_E" up
    ip -n "$NS_R" link set "$IF_R" up
    # A UDP listener on the router's WCCP port, so the kernel answers Squid's messages with
    # nothing rather than ICMP port unreachable (which a connected UDP socket would report
    # back to Squid as ECONNREFUSED on a later send).
    ip netns exec "$NS_R" socat -u "UDP-RECV:2048,bind=$ROUTER_IP,reuseaddr" /dev/null &
    STARTED_PIDS+=($!)
}

# The configuration every variant shares; $1 is the variant's private run directory.
common_conf() {
    local dir=$1
    cat <<EOF
# WCCPv2 fixture for Debian's Squid 5.7, written by scripts/capture-squid-fixtures.sh.
# Squid runs as 'squid -N -f <this file>' inside network namespace $NS_E ($ENGINE_IP);
# the router address is inside namespace $NS_R.
http_port $ENGINE_IP:3128
http_port $ENGINE_IP:3129 intercept
http_access deny all
visible_hostname $NS_E
shutdown_lifetime 1 seconds
pid_filename $dir/squid.pid
cache_log $dir/cache.log
access_log stdio:$dir/access.log
coredump_dir $dir
netdb_filename none
pinger_enable off
cache_mem 8 MB
wccp2_router $ROUTER_IP
EOF
}

# The WCCP lines of each variant.
variant_conf() {
    case $1 in
    gre-hash) cat <<'EOF'
wccp2_service standard 0
wccp2_forwarding_method gre
wccp2_return_method gre
wccp2_assignment_method hash
EOF
    ;;
    l2-mask) cat <<'EOF'
wccp2_service dynamic 90
wccp2_service_info 90 protocol=tcp flags=src_ip_hash priority=200 ports=80,443
wccp2_forwarding_method l2
wccp2_return_method l2
wccp2_assignment_method mask
EOF
    ;;
    md5-password) cat <<'EOF'
wccp2_service standard 0 password=Fx8pass!
wccp2_forwarding_method gre
wccp2_return_method gre
wccp2_assignment_method hash
EOF
    ;;
    dynamic-ports) cat <<'EOF'
wccp2_service dynamic 80
wccp2_service_info 80 protocol=tcp flags=src_ip_hash,dst_ip_hash,source_port_hash,dst_port_hash priority=240 ports=80,443,8080,3128,8000,8081,8443,65535
wccp2_forwarding_method gre
wccp2_return_method gre
wccp2_assignment_method hash
EOF
    ;;
    ports-source) cat <<'EOF'
wccp2_service dynamic 81
wccp2_service_info 81 protocol=tcp flags=dst_ip_hash,ports_source,src_ip_alt_hash,dst_ip_alt_hash,src_port_alt_hash,dst_port_alt_hash priority=100 ports=80,443
wccp2_forwarding_method gre
wccp2_return_method l2
wccp2_assignment_method hash
EOF
    ;;
    udp) cat <<'EOF'
wccp2_service dynamic 53
wccp2_service_info 53 protocol=udp flags=dst_ip_hash,dst_port_hash priority=50 ports=53,123
wccp2_forwarding_method gre
wccp2_return_method gre
wccp2_assignment_method hash
EOF
    ;;
    weight) cat <<'EOF'
wccp2_service standard 0
wccp2_forwarding_method gre
wccp2_return_method gre
wccp2_assignment_method hash
wccp2_weight 5000
EOF
    ;;
    *) die "unknown variant $1";;
    esac
}

count_packets() { # pcap -> number of packets (0 when unreadable or still empty)
    tcpdump -r "$1" -n 2>/dev/null | wc -l || true
}

capture_variant() {
    local v=$1 dir="$RUN/$1" fx="$OUT/$1" conf tcpdump_pid squid_pid i n
    mkdir -p "$dir" "$fx"
    chown proxy:proxy "$dir" 2>/dev/null || chmod 0777 "$dir"
    conf="$fx/squid.conf"
    { common_conf "$dir"; variant_conf "$v"; } >"$conf"
    squid -k parse -f "$conf" >"$dir/parse.log" 2>&1 ||
        { cat "$dir/parse.log" >&2; die "$v: squid -k parse failed"; }

    ip netns exec "$NS_R" tcpdump -i "$IF_R" -n -U -Z root -c "$PKTS" -w "$dir/here-i-am.pcap" \
        "udp and dst port 2048 and src host $ENGINE_IP and dst host $ROUTER_IP" \
        2>"$dir/tcpdump.log" &
    tcpdump_pid=$!
    STARTED_PIDS+=("$tcpdump_pid")
    for i in $(seq 50); do
        grep -q "listening on" "$dir/tcpdump.log" && break
        kill -0 "$tcpdump_pid" 2>/dev/null || { cat "$dir/tcpdump.log" >&2; die "$v: tcpdump died"; }
        sleep 0.1
    done

    # 'ip netns exec' execs squid itself, so $! is Squid's own PID.
    ip netns exec "$NS_E" squid -N -f "$conf" >"$dir/squid.out" 2>&1 &
    squid_pid=$!
    STARTED_PIDS+=("$squid_pid")
    log "$v: squid pid $squid_pid, waiting for $PKTS Here-I-Am messages"

    for i in $(seq $((CAPTURE_TIMEOUT * 10))); do
        kill -0 "$tcpdump_pid" 2>/dev/null || break
        kill -0 "$squid_pid" 2>/dev/null ||
            { cat "$dir/squid.out" "$dir/cache.log" >&2 2>/dev/null; die "$v: squid exited early"; }
        sleep 0.1
    done
    if kill -0 "$tcpdump_pid" 2>/dev/null; then
        cat "$dir/cache.log" >&2 2>/dev/null || true
        die "$v: no $PKTS Here-I-Am messages within ${CAPTURE_TIMEOUT}s"
    fi
    wait "$tcpdump_pid" 2>/dev/null || true
    kill_pid "$squid_pid"
    if grep -qE "FATAL|ERROR" "$dir/cache.log" 2>/dev/null; then
        grep -E "FATAL|ERROR" "$dir/cache.log" >&2
        die "$v: errors in cache.log"
    fi

    n=$(count_packets "$dir/here-i-am.pcap")
    [ "$n" -eq "$PKTS" ] || die "$v: captured $n packets, want $PKTS"
    cp "$dir/here-i-am.pcap" "$fx/here-i-am.pcap"
    chmod 0644 "$fx/here-i-am.pcap" "$conf"
    log "$v: captured $n messages after about $((i / 10)) s ($(grep -c 'WCCP' "$dir/cache.log" 2>/dev/null || echo 0) WCCP lines in cache.log)"
}

# Compares each capture with its expected.json, using tshark's decode of every message,
# plus an MD5 recomputation (draft: MD5 over the 8-byte NUL-padded password followed by the
# whole WCCP message with the 16-byte digest zeroed).
check_variant() {
    local v=$1 fx="$OUT/$1"
    if [ ! -f "$fx/expected.json" ]; then
        log "$v: no expected.json yet; tshark says:"
        tshark -r "$fx/here-i-am.pcap" -V -Y wccp 2>/dev/null | sed -n '/^Web Cache Communication Protocol/,$p' >&2
        return 0
    fi
    tshark -r "$fx/here-i-am.pcap" -Y wccp -T fields -E occurrence=a -E aggregator=, -E separator='|' \
        -e wccp.message -e wccp.message_header_version -e wccp.message_header_length \
        -e wccp.security_info_option -e wccp.service_info_type -e wccp.service_info_std_id \
        -e wccp.service_info_dyn_id -e wccp.service_info_priority -e wccp.service_info_protocol \
        -e wccp.service_info_flags -e wccp.service_info_source_port \
        -e wccp.service_info_destination_port -e wccp.web_cache_identity.ipv4 \
        -e wccp.assignment_weight -e wccp.capability_element.type -e wccp.capability_info.value \
        -e wccp.wc_view_info.router_ip.ipv4 -e wccp.wc_view_info.change_num \
        -e wccp.mask_element.src_ip -e wccp.mask_element.dest_ip \
        -e wccp.mask_element.src_port -e wccp.mask_element.dest_port \
        -e wccp.web_cache_identity.flags -e wccp.router_identity.receive_id \
        -e wccp.wc_view_info.wc_num -e udp.srcport -e udp.dstport -e ip.src -e ip.dst \
        >"$RUN/$v.fields" 2>/dev/null
    tshark -r "$fx/here-i-am.pcap" -T fields -e udp.payload >"$RUN/$v.payload" 2>/dev/null
    tshark -r "$fx/here-i-am.pcap" -q -z expert >"$RUN/$v.expert" 2>/dev/null
    python3 - "$v" "$fx/expected.json" "$RUN/$v.fields" "$RUN/$v.payload" "$RUN/$v.expert" <<'PY'
import hashlib, json, re, sys

variant, exp_path, fields_path, payload_path, expert_path = sys.argv[1:]
exp = json.load(open(exp_path))
fails = []
FLAG_BITS = {"src_ip_hash": 0x1, "dst_ip_hash": 0x2, "src_port_hash": 0x4, "dst_port_hash": 0x8,
             "ports_defined": 0x10, "ports_source": 0x20, "src_ip_alt_hash": 0x100,
             "dst_ip_alt_hash": 0x200, "src_port_alt_hash": 0x400, "dst_port_alt_hash": 0x800}

def check(what, got, want):
    if got != want:
        fails.append(f"{what}: tshark {got!r}, expected.json {want!r}")

def num(s):
    return int(s, 0)

def nums(s):
    return [num(x) for x in s.split(",") if x]

s = exp["service"]
bits = 0
for f in s["flags"]:
    bits |= FLAG_BITS[f]
check("expected.json flags list vs flags_value", bits, s["flags_value"])
check("expected.json flags_hex vs flags_value", num(s["flags_hex"]), s["flags_value"])

rows = [l.rstrip("\n").split("|") for l in open(fields_path) if l.strip()]
check("message count", len(rows), exp["messages_in_pcap"])
for i, r in enumerate(rows):
    (msg, ver, length, sec, stype, std_id, dyn_id, prio, proto, flags, sports, dports,
     wc_ip, weight, cap_types, cap_values, view_routers, view_change,
     m_sip, m_dip, m_sport, m_dport, id_flags, recv_ids, wc_num,
     usrc, udst, ipsrc, ipdst) = r
    p = f"message {i + 1}: "
    check(p + "ip src/dst", [ipsrc, ipdst], [exp["engine_ip"], exp["router_ip"]])
    check(p + "udp ports", [num(usrc), num(udst)], [exp["udp_src_port"], exp["udp_dst_port"]])
    check(p + "message type", num(msg), exp["message_type"])
    check(p + "version", num(ver), exp["version"])
    check(p + "length", num(length), exp["message_length"])
    check(p + "security option", num(sec), exp["security"]["option_value"])
    check(p + "service type", num(stype), s["type_value"])
    check(p + "service id", num(std_id or dyn_id), s["id"])
    check(p + "priority", num(prio), s["priority"])
    check(p + "protocol", num(proto), s["protocol"])
    check(p + "flags", num(flags), s["flags_value"])
    ports = [x for x in nums(sports) + nums(dports) if x]
    check(p + "ports (non-zero)", ports, s["ports"])
    if s["ports"]:
        # tshark 4.0 labels the ports "Source Port" when src_port_hash (0x4) is set, not
        # when ports_source (0x20) is: a dissector quirk. The meaning is in the flags.
        which = "source" if "src_port_hash" in s["flags"] else "destination"
        check(p + "ports labelled by tshark as", "source" if sports else "destination", which)
    check(p + "engine ip", wc_ip, exp["web_cache"]["ip"])
    check(p + "weight", num(weight), exp["web_cache"]["weight"])
    check(p + "identity flags", num(id_flags), exp["web_cache"]["identity_flags"])
    caps = dict(zip(nums(cap_types), nums(cap_values)))
    c = exp["capabilities"]
    check(p + "capabilities", caps, {1: c["forwarding_method"], 2: c["assignment_method"], 3: c["return_method"]})
    w = exp["web_cache_view"]
    check(p + "view routers", view_routers.split(","), w["routers"])
    check(p + "view received ids", nums(recv_ids), w["received_ids"])
    check(p + "view change number", num(view_change), w["change_number"])
    check(p + "view caches", num(wc_num), len(w["caches"]))
    if "mask" in exp["web_cache"]:
        m = exp["web_cache"]["mask"]
        got = {"src_ip": num(m_sip), "dst_ip": num(m_dip), "src_port": num(m_sport), "dst_port": num(m_dport)}
        check(p + "mask element", got, {k: num(m[k]) for k in got})

payloads = [bytes.fromhex(l.strip().replace(":", "")) for l in open(payload_path) if l.strip()]
for i, pkt in enumerate(payloads):
    check(f"message {i + 1}: udp payload size", len(pkt), 8 + exp["message_length"])
    sec = exp["security"]
    if sec["option"] == "md5":
        # Security Info starts right after the 8-byte message header: type, length, option,
        # then the 16-byte digest at payload offset 16.
        pw = sec["password"].encode()[:8].ljust(8, b"\0")
        digest = pkt[16:32]
        zeroed = pkt[:16] + bytes(16) + pkt[32:]
        check(f"message {i + 1}: md5 digest", digest.hex(), hashlib.md5(pw + zeroed).hexdigest())

levels = {"Errors": "error", "Warns": "warning", "Notes": "note", "Chats": "chat", "Comments": "comment"}
got, level = [], None
for line in open(expert_path):
    h = re.match(r"^(\w+) \(\d+\)", line)
    if h:
        level = levels.get(h.group(1))
        continue
    row = re.match(r"^\s+(\d+)\s+\S+\s+WCCP\s+(.*\S)\s*$", line)
    if row and level:
        got.append({"severity": level, "summary": row.group(2), "count": int(row.group(1))})
key = lambda e: (e["severity"], e["summary"])
check("tshark expert info", sorted(got, key=key), sorted(exp["tshark_expert"], key=key))

if fails:
    print(f"{variant}: MISMATCH\n  " + "\n  ".join(fails))
    sys.exit(1)
print(f"{variant}: {len(rows)} messages match expected.json")
PY
}

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("${ALL_VARIANTS[@]}")
rm -rf "$RUN"
mkdir -p "$RUN" "$OUT"
chmod 0755 "$RUN"
setup_netns
for v in "${variants[@]}"; do
    capture_variant "$v"
done
failed=0
for v in "${variants[@]}"; do
    check_variant "$v" || failed=1
done
[ $failed -eq 0 ] || die "some captures do not match expected.json"
log "done: ${variants[*]}"
