#!/usr/bin/env bash
# bench/tls.sh - TLS termination cost on loopback: Serval (examples/lb
# --cert/--key) vs nginx and HAProxy terminating TLS with the same
# certificate and proxying to the same plain origin.
#
# Two measurements per certificate type (CERTS: ecdsa = P-256, rsa = 2048):
#   handshakes : full handshakes per second. `openssl s_time -new` opens a
#                connection, runs a full handshake (-new: never resumes a
#                session), closes, and repeats for HS_TIME seconds; HS_PAR
#                such clients run at once. No HTTP request is sent, so this
#                is the handshake alone. (wrk with "Connection: close" is
#                not used: it keeps the SSL session across reconnects, so
#                most of its handshakes would be resumptions.) TLS 1.3 with
#                X25519 is what the three servers and OpenSSL negotiate.
#   keepalive  : HTTPS requests per second over keep-alive connections,
#                `wrk -t1 -c$CONNS -d$DURATION https://.../small` (128 B
#                body), each request proxied to the plain origin.
# Beside each rate: the server's CPU time per handshake or request
# (utime+stime of the proxy and its workers, from /proc), the fairer figure
# when the client shares the machine.
#
# Same header work everywhere: every proxy passes the client's Host on and
# adds X-Forwarded-For, -Proto and -Host, as Serval does by default.
#
# Layout (127.0.0.1 only): the proxy alone on CPU $PROXY_CPU with one
# worker (nginx worker_processes 1, HAProxy nbthread 1, Go GOMAXPROCS=1);
# the clients (openssl, wrk) and the origin (bench/origin, :19491) on CPU
# $CLIENT_CPU. serval :19480, nginx :19481, haproxy :19482. Certificates are
# generated with openssl into the work dir.
#
# Settings (environment): PORT_BASE (19480) DURATION (8s) HS_TIME (5, seconds) HS_PAR (2)
#   CONNS (50) THREADS (1) CERTS ("ecdsa rsa") TARGETS ("serval nginx
#   haproxy") CLIENT_CPU (0) PROXY_CPU (1) SERVAL_ARGS (extra lb flags)
#   QUIET_MAX (15) QUIET_WAIT (30) WORK (mktemp dir) RESULTS (copy the
#   summary and CSV there)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-8s}
HS_TIME=${HS_TIME:-5}
HS_PAR=${HS_PAR:-2}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
CERTS=${CERTS:-"ecdsa rsa"}
TARGETS=${TARGETS:-"serval nginx haproxy"}
CLIENT_CPU=${CLIENT_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
SERVAL_ARGS=${SERVAL_ARGS:-}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench-tls.XXXXXX)}
B=${PORT_BASE:-19480} # the ports above move by the same offset
ORIGIN=$((B + 11))
declare -A PORT=([serval]=$B [nginx]=$((B + 1)) [haproxy]=$((B + 2)))

tools=(wrk curl taskset ss ps openssl)
[[ " $TARGETS " == *" nginx "* ]] && tools+=(nginx)
[[ " $TARGETS " == *" haproxy "* ]] && tools+=(haproxy)
ensure_tools "${tools[@]}"
ensure_go

mkdir -p "$WORK/bin"
chmod 755 "$WORK" # nginx workers may run as nobody
CSV=$WORK/raw.csv
echo "cert,target,test,rate,p50_us,p99_us,count,errors,proxy_cpu_s,bg_busy" >"$CSV"
log "work dir: $WORK"
(cd "$REPO" && go build -o "$WORK/bin/" ./bench/origin)
if [[ " $TARGETS " == *" serval "* ]]; then
  (cd "$REPO" && go build -o "$WORK/bin/serval-lb" ./examples/lb) || log "serval: examples/lb did not build; skipping it"
fi

# make_cert KIND: self-signed certificate for 127.0.0.1 into $WORK/KIND.
make_cert() {
  local kind=$1 d=$WORK/$1 alg
  mkdir -p "$d"
  case $kind in
    ecdsa) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) alg=(-newkey rsa:2048) ;;
    *) log "unknown cert kind $kind"; exit 1 ;;
  esac
  openssl req -x509 "${alg[@]}" -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
  cat "$d/cert.pem" "$d/key.pem" >"$d/haproxy.pem" # HAProxy wants both in one file
}

write_configs() { # write_configs KIND
  local d=$WORK/$1 n=$WORK/nginx
  mkdir -p "$n/logs" "$n/tmp"
  cat >"$n/nginx.conf" <<NGINX
worker_processes 1;
pid $n/nginx.pid;
error_log $n/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $n/tmp/body;
  proxy_temp_path $n/tmp/proxy;
  fastcgi_temp_path $n/tmp/fcgi;
  uwsgi_temp_path $n/tmp/uwsgi;
  scgi_temp_path $n/tmp/scgi;
  upstream be {
    server 127.0.0.1:$ORIGIN;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} ssl;
    ssl_certificate $d/cert.pem;
    ssl_certificate_key $d/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
    }
  }
}
NGINX
  cat >"$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]} ssl crt $d/haproxy.pem
  default_backend be
backend be
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  server s1 127.0.0.1:$ORIGIN
HAPROXY
}

available() {
  case $1 in
    serval) [[ -x $WORK/bin/serval-lb ]] ;;
    nginx | haproxy) command -v "$1" >/dev/null ;;
    *) return 1 ;;
  esac
}

wait_https() { # wait_https PORT: up to 15 s for a 2xx over TLS
  local i
  for i in $(seq 150); do
    curl -kfs -o /dev/null --max-time 1 "https://127.0.0.1:$1/small" && return 0
    sleep 0.1
  done
  return 1
}

start_target() { # start_target NAME KIND
  local t=$1 d=$WORK/$2
  port_free "${PORT[$t]}" || { log "port ${PORT[$t]} for $t is taken; skipping $t"; return 1; }
  case $t in
    serval) # shellcheck disable=SC2086
      start_bg serval "$PROXY_CPU" env GOMAXPROCS=1 "$WORK/bin/serval-lb" --host 127.0.0.1 --port "${PORT[serval]}" \
        --backends "127.0.0.1:$ORIGIN" --cert "$d/cert.pem" --key "$d/key.pem" $SERVAL_ARGS ;;
    nginx) start_bg nginx "$PROXY_CPU" nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" -g 'daemon off;' ;;
    haproxy) start_bg haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" ;;
  esac
  wait_https "${PORT[$t]}" || { log "$t did not come up; see $WORK/$t.log"; stop_name "$t"; return 1; }
}

# handshakes PORT OUTPREFIX -> "handshakes seconds": HS_PAR s_time clients
# on CLIENT_CPU, full handshakes only, HS_TIME seconds each. The time is
# measured here (s_time prints whole seconds).
handshakes() {
  local port=$1 out=$2 i pids=() t0 t1
  t0=$EPOCHREALTIME
  for ((i = 1; i <= HS_PAR; i++)); do
    taskset -c "$CLIENT_CPU" openssl s_time -connect "127.0.0.1:$port" -new -time "$HS_TIME" >"$out.$i.txt" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1=$EPOCHREALTIME
  # "N connections in T real seconds, ..." (one such line per client)
  cat "$out".*.txt | awk -v t0="$t0" -v t1="$t1" '/connections in [0-9.]+ real seconds/ {n+=$1} END {printf "%d %.2f\n", n, t1-t0}'
}

measure_hs() { # measure_hs KIND TARGET
  local kind=$1 t=$2 pid=${PID_OF[$2]} bg k0 k1 n secs rate cpu
  bg=$(wait_quiet)
  k0=$(proc_ticks "$pid")
  read -r n secs < <(handshakes "${PORT[$t]}" "$WORK/stime-$kind-$t")
  k1=$(proc_ticks "$pid")
  rate=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.0f", n/s}')
  cpu=$(awk -v a="$k0" -v b="$k1" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz}')
  echo "$kind,$t,handshakes,$rate,0,0,$n,0,$cpu,$bg" >>"$CSV"
  log "$kind $t handshakes: $rate/s ($n in ${secs}s) proxyCPU=${cpu}s bg=${bg}%"
}

measure_ka() { # measure_ka KIND TARGET
  local kind=$1 t=$2 pid=${PID_OF[$2]} bg rps p50 p99 nreq errs cpu
  DURATION=2s run_wrk "$WORK/warmup-$kind-$t.txt" "$CLIENT_CPU" "https://127.0.0.1:${PORT[$t]}/small"
  bg=$(wait_quiet)
  read -r rps p50 p99 nreq errs cpu < <(measure "$t" "$pid" "$CLIENT_CPU" "https://127.0.0.1:${PORT[$t]}/small" \
    "$WORK/wrk-$kind-$t.txt")
  echo "$kind,$t,keepalive,$rps,$p50,$p99,$nreq,$errs,$cpu,$bg" >>"$CSV"
  log "$kind $t keep-alive: $rps req/s p50=${p50}us p99=${p99}us err=$errs proxyCPU=${cpu}s bg=${bg}%"
}

port_free $ORIGIN || { log "origin port $ORIGIN is taken"; exit 1; }
start_bg origin "$CLIENT_CPU" env GOMAXPROCS=1 "$WORK/bin/origin" -listen "127.0.0.1:$ORIGIN"
wait_http $ORIGIN /small || { log "origin did not start"; exit 1; }

for kind in $CERTS; do
  make_cert "$kind"
  write_configs "$kind"
  for t in $TARGETS; do
    available "$t" || { log "skip $t: not available"; continue; }
    start_target "$t" "$kind" || continue
    measure_hs "$kind" "$t"
    measure_ka "$kind" "$t"
    stop_name "$t"
  done
done
stop_name origin

summary() {
  awk -F, -v head="handshakes: openssl s_time -new x$HS_PAR, ${HS_TIME}s; keep-alive: wrk -t$THREADS -c$CONNS -d$DURATION /small (128 B)" '
function fmtus(v) { return (v>=1000) ? sprintf("%.2fms", v/1000) : sprintf("%.0fus", v) }
NR==1 {next}
{ k=$1 SUBSEP $2; if (!(k in seen)) { seen[k]=1; order[++no]=k }
  if ($3=="handshakes") { hs[k]=$4; hscpu[k]=($7>0)? $9/$7*1e6 : 0 }
  else { ka[k]=$4; p50[k]=$5; p99[k]=$6; kacpu[k]=($7>0)? $9/$7*1e6 : 0; err[k]=$8 }
  bg[k]=(bg[k]>$10)? bg[k] : $10 }
END {
  printf "%s\n", head
  last=""
  for (i=1;i<=no;i++) { split(order[i],f,SUBSEP)
    if (f[1]!=last) { last=f[1]
      printf "\n## cert=%s\n%-8s %10s %12s %12s %9s %9s %12s %5s %4s\n", f[1], "target", "hs/s", "CPU us/hs", "ka req/s", "p50", "p99", "CPU us/req", "err", "bg%" }
    k=order[i]
    printf "%-8s %10.0f %12.0f %12.0f %9s %9s %12.1f %5d %4s\n", f[2], hs[k], hscpu[k], ka[k], fmtus(p50[k]), fmtus(p99[k]), kacpu[k], err[k], bg[k] }
}' "$CSV"
}
echo
summary | tee "$WORK/summary.txt"
if [[ -n ${RESULTS:-} ]]; then
  mkdir -p "$RESULTS"; cp "$WORK/summary.txt" "$CSV" "$RESULTS/"
fi
log "raw results: $CSV; outputs and server logs: $WORK"
