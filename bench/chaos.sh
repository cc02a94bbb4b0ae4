#!/usr/bin/env bash
# bench/chaos.sh - integrity under faults: bench/chaos's clients (random
# body sizes, Content-Length and chunked, pipelined, read slowly, some going away
# mid-upload or mid-download) through examples/lb to two
# examples/echo-backend --echo-body, plain and TLS, with one processor, with
# two, and as two worker processes (--workers 2: PROCS value w2). Fails
# when an echo comes back altered, a good client fails, the balancer logs
# a panic, or a client's departure is blamed on a backend (passive health
# would take a healthy backend out).
#
# Settings (environment): PORT_BASE (19620) CLIENTS (24) REQUESTS (120) BODY_MAX (400000)
#   PROCS ("1 2 w2") MODES ("plain tls") WORK (mktemp dir)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-24}
REQUESTS=${REQUESTS:-120}
BODY_MAX=${BODY_MAX:-400000}
PROCS=${PROCS:-"1 2 w2"}
MODES=${MODES:-"plain tls"}
WORK=${WORK:-$(mktemp -d /tmp/serval-chaos.XXXXXX)}
B=${PORT_BASE:-19620} # the balancer on it, the backends on the next two
LB=$B BE1=$((B + 1)) BE2=$((B + 2))

ensure_tools curl openssl ss
ensure_go
mkdir -p "$WORK/bin"
log "work dir: $WORK"
(cd "$REPO" && go build -o "$WORK/bin/" ./examples/lb ./examples/echo-backend ./bench/chaos)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
for p in $LB $BE1 $BE2; do port_free "$p" || { log "port $p is taken"; exit 1; }; done

failed=0
for procs in $PROCS; do
  for mode in $MODES; do
    tag="$mode-p$procs" gmp=$procs lbargs=()
    if [[ $procs == w* ]]; then gmp=2 lbargs=(--workers "${procs#w}"); fi
    start_bg "be1-$tag" "" env GOMAXPROCS="$gmp" "$WORK/bin/echo-backend" --host 127.0.0.1 --port $BE1 --echo-body --id be1
    start_bg "be2-$tag" "" env GOMAXPROCS="$gmp" "$WORK/bin/echo-backend" --host 127.0.0.1 --port $BE2 --echo-body --id be2
    tlsargs=() chaosargs=()
    if [[ $mode == tls ]]; then tlsargs=(--cert "$WORK/cert.pem" --key "$WORK/key.pem"); chaosargs=(-tls); fi
    start_bg "lb-$tag" "" env GOMAXPROCS="$gmp" "$WORK/bin/lb" --host 127.0.0.1 --port $LB \
      --backends "127.0.0.1:$BE1,127.0.0.1:$BE2" "${tlsargs[@]}" "${lbargs[@]}"
    for i in $(seq 100); do ss -Hltn "( sport = :$LB )" | grep -q . && break; sleep 0.1; done
    log "$tag: $CLIENTS clients x $REQUESTS requests"
    if ! timeout 600 "$WORK/bin/chaos" -addr "127.0.0.1:$LB" -clients "$CLIENTS" -requests "$REQUESTS" \
        -body-max "$BODY_MAX" "${chaosargs[@]}" >"$WORK/chaos-$tag.txt" 2>&1; then
      log "$tag: FAILED: $(tail -1 "$WORK/chaos-$tag.txt")"; failed=1
    else
      log "$tag: $(tail -1 "$WORK/chaos-$tag.txt")"
    fi
    stop_name "lb-$tag"; stop_name "be1-$tag"; stop_name "be2-$tag"
    lblog="$WORK/lb-$tag.log"
    if grep -aq "panic" "$lblog"; then log "$tag: the balancer panicked (see $lblog)"; failed=1; fi
    blamed=$(grep -a "exchange failed" "$lblog" | grep -ac "phase=upstream" || true)
    flips=$(grep -ac "health changed (passive)" "$lblog" || true)
    log "$tag: upstream-blamed failures: $blamed, passive health changes: $flips"
    if ((blamed > 0 || flips > 0)); then log "$tag: a client's departure was blamed on a backend"; failed=1; fi
  done
done
log "outputs and logs: $WORK"
exit $failed
