#!/usr/bin/env bash
# bench/allocs.sh - heap allocations per proxied request in the built
# balancer, counted from outside as a user would: examples/lb runs with
# --metrics-addr, and go_memstats_mallocs_total (Go's runtime count of heap
# objects allocated, from /metrics) is read before and after wrk runs.
#
# Each case runs wrk twice on the same balancer, SHORT then LONG, and
# reports the allocations of each run and the marginal figure
#   (mallocs_long - mallocs_short) / (requests_long - requests_short)
# which cancels what both runs share: wrk's new connections (TLS
# handshakes included), the scrapes themselves. What is left in it is
# the balancer's periodic work (an active health probe of each backend
# every 5 s, a few hundred allocations each) against the requests: a
# per-request allocation would read 1.0 or more, a steady state with
# none reads a few hundredths either side of 0.
#
# Cases: GET 128 B and 64 KiB answers, POST with a 1000-byte
# Content-Length body and with a chunked one, four pipelined GETs per
# write, GET over TLS (--cert/--key, a self-signed P-256 certificate made
# with openssl), GET with --access-log to a file.
#
# Layout (127.0.0.1 only): two bench/origin servers (:19591, :19592),
# examples/lb on :19580 with metrics on :19589, wrk -t1 -c$CONNS. Nothing
# pinned: the figure counts objects, not time.
#
# Settings (environment): CONNS (20) SHORT (3s) LONG (15s) CASES (all of
#   "small big post-cl post-chunked pipelined tls access-log")
#   SERVAL_ARGS (extra lb flags) WORK (mktemp dir)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-20}
SHORT=${SHORT:-3s}
LONG=${LONG:-15s}
CASES=${CASES:-"small big post-cl post-chunked pipelined tls access-log"}
SERVAL_ARGS=${SERVAL_ARGS:-}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench-allocs.XXXXXX)}
LB_PORT=19580 METRICS_PORT=19589 BE1=19591 BE2=19592

ensure_tools wrk curl ss openssl
ensure_go
for p in $LB_PORT $METRICS_PORT $BE1 $BE2; do
  port_free "$p" || { log "port $p is taken by another program"; exit 1; }
done
mkdir -p "$WORK/bin"
(cd "$REPO" && go build -o "$WORK/bin/serval-lb" ./examples/lb && go build -o "$WORK/bin/origin" ./bench/origin)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat >"$WORK/post-cl.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 1000)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
cat >"$WORK/post-chunked.lua" <<'EOF'
local req = "POST /small HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" ..
  string.rep("y", 1000) .. "\r\n0\r\n\r\n"
request = function() return req end
EOF
cat >"$WORK/pipelined.lua" <<'EOF'
local r = "GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
local req = r .. r .. r .. r
request = function() return req end
EOF

start_bg be1 "" "$WORK/bin/origin" -listen "127.0.0.1:$BE1"
start_bg be2 "" "$WORK/bin/origin" -listen "127.0.0.1:$BE2"
wait_http "$BE1" /small && wait_http "$BE2" /small || { log "origins did not start"; exit 1; }

lb_start() { # lb_start SCHEME FLAGS...
  local scheme=$1 i; shift
  # shellcheck disable=SC2086
  start_bg lb "" "$WORK/bin/serval-lb" --host 127.0.0.1 --port "$LB_PORT" --metrics-addr "127.0.0.1:$METRICS_PORT" \
    --backends "127.0.0.1:$BE1,127.0.0.1:$BE2" "$@" $SERVAL_ARGS
  for i in $(seq 100); do
    curl -fsk -o /dev/null --max-time 1 "$scheme://127.0.0.1:$LB_PORT/small" && return 0
    sleep 0.1
  done
  log "lb did not start:"; cat "$WORK/lb.log" >&2; exit 1
}
mallocs() { curl -fs "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^go_memstats_mallocs_total /{printf "%d", $2}'; }
# measure DURATION URL WRKARGS...: prints "requests mallocs errors"
measure() {
  local d=$1 url=$2 a b out; shift 2
  a=$(mallocs)
  out=$(wrk -t1 -c"$CONNS" -d"$d" "$@" "$url" 2>&1)
  b=$(mallocs)
  echo "$(awk '/requests in/{print $1}' <<<"$out") $((b - a)) $(grep -cE 'Non-2xx|Socket errors' <<<"$out" || true)"
}

printf '%-13s %10s %9s %10s %9s %12s\n' case "req $SHORT" mallocs "req $LONG" mallocs "per request"
for c in $CASES; do
  scheme=http path=/small args=() flags=()
  case $c in
    small) ;;
    big) path=/big ;;
    post-cl | post-chunked | pipelined) args=(-s "$WORK/$c.lua") ;;
    tls) scheme=https flags=(--cert "$WORK/cert.pem" --key "$WORK/key.pem") ;;
    access-log) flags=(--access-log "$WORK/access.log") ;;
    *) log "unknown case $c"; continue ;;
  esac
  lb_start "$scheme" "${flags[@]}"
  url="$scheme://127.0.0.1:$LB_PORT$path"
  wrk -t1 -c"$CONNS" -d2s "${args[@]}" "$url" >/dev/null 2>&1 # warm the pool and the buffers
  read -r q1 m1 e1 <<<"$(measure "$SHORT" "$url" "${args[@]}")"
  read -r q2 m2 e2 <<<"$(measure "$LONG" "$url" "${args[@]}")"
  stop_name lb
  awk -v c="$c" -v q1="$q1" -v m1="$m1" -v q2="$q2" -v m2="$m2" -v e=$((e1 + e2)) 'BEGIN{
    printf "%-13s %10d %9d %10d %9d %12.4f%s\n", c, q1, m1, q2, m2, (q2 > q1 ? (m2 - m1) / (q2 - q1) : 0), (e ? "  (wrk reported errors)" : "") }'
done
