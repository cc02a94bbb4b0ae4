#!/usr/bin/env bash
# bench/proxy.sh - reverse-proxy throughput, latency and CPU cost on loopback:
# Serval (examples/lb) vs nginx, HAProxy and Go's httputil.ReverseProxy,
# against the origin alone ("direct").
#
# Layout (127.0.0.1 only):
#   origins : bench/origin (net/http) on :19391 and :19392; /small (128 B)
#             and /big (64 KiB) with Content-Length; GET /_conns counts the
#             connections each accepted
#   direct  : wrk -> origin :19391 (the no-proxy ceiling)
#   serval  : :19380 examples/lb --backends both origins (pooled keep-alive)
#   nginx   : :19381 upstream keepalive 256, proxy_http_version 1.1,
#             proxy_buffering on (the default)
#   haproxy : :19382 balance roundrobin, http-reuse always
#   goproxy : :19383 bench/goproxy (httputil.ReverseProxy, MaxIdleConnsPerHost 256)
#   Same work everywhere: every proxy passes the client's Host on and adds
#   X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host, as Serval does
#   by default (nginx proxy_set_header, HAProxy option forwardfor and
#   set-header, httputil SetXForwarded).
#   serval-nohealth : :19384 examples/lb --no-health (no probes, no passive
#             checks), to compare with serval's default health checking
#             (active probes every 5 s, passive checks on every request):
#             TARGETS="serval serval-nohealth" bash bench/proxy.sh
#
# Modes (MODES):
#   pinned : the proxy alone on CPU $PROXY_CPU with one worker (nginx
#            worker_processes 1, HAProxy nbthread 1, Go GOMAXPROCS=1); wrk
#            and both origins on CPU $CLIENT_CPU.
#   shared : nothing pinned; $(nproc) workers everywhere: nginx
#            worker_processes, HAProxy nbthread, Serval lb --workers (that
#            many processes with GOMAXPROCS=1 each), GOMAXPROCS=$(nproc) for
#            the Go origins and httputil.
#   serval-1proc : (not in the default TARGETS) :19387 examples/lb as one
#            process with GOMAXPROCS=workers, to compare with --workers.
#
# Order: the targets run in turn, and the order rotates by one each round,
# so with ROUNDS a multiple of the number of targets (5 by default) each
# target runs once in every position. With fewer rounds some targets run
# late more often than others; on a host whose speed drifts within a run
# that costs them. In ten runs of 2026-11-28 with ROUNDS=3, each target's
# third pinned 128 B round against its first two (req/s, medians): nginx,
# first in that round, 1.06; HAProxy 0.94; httputil 0.98; the origin alone
# 0.93; Serval, last, 0.84. The script says when the rotation is not
# balanced.
#
# Columns: req/s (median over ROUNDS, min-max), p50/p99 (medians), ratio to
# direct (same mode and size), proxy CPU us/req (utime+stime of the proxy
# process and its child workers, from /proc, over requests served), upconn
# (connections the origins accepted during the run: about 0 for a warm
# pool), err (socket errors + non-2xx), bg% (the highest share of the
# machine busy with other programs just before a run; a high value makes
# the row suspect: each run first waits up to QUIET_WAIT s for QUIET_MAX %).
#
# Settings (environment): PORT_BASE (19380) DURATION (8s) WARMUP (2s) CONNS (50) THREADS (1)
#   ROUNDS (3) SIZES ("small big") MODES ("pinned shared")
#   TARGETS ("direct serval nginx haproxy goproxy") SMALL_BYTES (128)
#   BIG_BYTES (65536) CLIENT_CPU (0) PROXY_CPU (1) SERVAL_ARGS (extra lb
#   flags) QUIET_MAX (15) QUIET_WAIT (30) WORK (mktemp dir) RESULTS (copy
#   summary and CSV there) NEWCONN (0; 1: every request on a new client
#   connection, "Connection: close", the upstream side still pooled)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"small big"}
MODES=${MODES:-"pinned shared"}
TARGETS=${TARGETS:-"direct serval nginx haproxy goproxy"}
SMALL_BYTES=${SMALL_BYTES:-128}
BIG_BYTES=${BIG_BYTES:-65536}
CLIENT_CPU=${CLIENT_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
SERVAL_ARGS=${SERVAL_ARGS:-}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench-proxy.XXXXXX)}
# PORT_BASE (19380) moves every port above by the same offset.
B=${PORT_BASE:-19380}
BE1=$((B + 11)) BE2=$((B + 12))
declare -A PORT=([direct]=$BE1 [serval]=$B [nginx]=$((B + 1)) [haproxy]=$((B + 2)) [goproxy]=$((B + 3)) [serval-nohealth]=$((B + 4)) [serval-1proc]=$((B + 7)))

tools=(wrk curl taskset ss ps)
[[ " $TARGETS " == *" nginx "* ]] && tools+=(nginx)
[[ " $TARGETS " == *" haproxy "* ]] && tools+=(haproxy)
ensure_tools "${tools[@]}"
ensure_go

mkdir -p "$WORK/bin"
chmod 755 "$WORK"   # nginx workers may run as nobody
CSV=$WORK/raw.csv
if [[ ${NEWCONN:-0} == 1 ]]; then
  # Every request on a new connection (the client's "Connection: close";
  # the proxies' upstream side stays pooled).
  WRK_SCRIPT=$WORK/newconn.lua
  echo 'wrk.headers["Connection"] = "close"' >"$WRK_SCRIPT"
  export WRK_SCRIPT
fi
echo "mode,size,round,target,rps,p50_us,p99_us,requests,errors,proxy_cpu_s,upstream_conns,bg_busy" >"$CSV"
log "work dir: $WORK"
(cd "$REPO" && go build -o "$WORK/bin/" ./bench/origin ./bench/goproxy)
if [[ " $TARGETS " == *" serval"* ]]; then
  (cd "$REPO" && go build -o "$WORK/bin/serval-lb" ./examples/lb) || log "serval: examples/lb did not build; skipping it"
fi

write_configs() { # write_configs WORKERS
  local w=$1 d=$WORK/nginx
  mkdir -p "$d/logs" "$d/tmp"
  cat >"$d/nginx.conf" <<NGINX
worker_processes $w;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  upstream be {
    server 127.0.0.1:$BE1;
    server 127.0.0.1:$BE2;
    keepalive 256;            # idle upstream connections per worker
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_buffers 8 16k;    # a 64 KiB body fits in memory, no temp file
    }
  }
}
NGINX
  cat >"$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread $w
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend be
backend be
  balance roundrobin
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  server s1 127.0.0.1:$BE1
  server s2 127.0.0.1:$BE2
HAPROXY
}

available() {
  case $1 in
    direct | goproxy) return 0 ;;
    serval | serval-nohealth | serval-1proc) [[ -x $WORK/bin/serval-lb ]] ;;
    nginx | haproxy) command -v "$1" >/dev/null ;;
    *) return 1 ;;
  esac
}

start_target() { # start_target NAME CPULIST GOMAXPROCS WORKERS
  local t=$1 cpus=$2 gmp=$3 w=$4
  [[ $t == direct ]] && return 0
  port_free "${PORT[$t]}" || { log "port ${PORT[$t]} for $t is taken; skipping $t"; return 1; }
  case $t in
    serval) # shellcheck disable=SC2086
      start_bg serval "$cpus" env GOMAXPROCS="$gmp" "$WORK/bin/serval-lb" --host 127.0.0.1 --port "${PORT[serval]}" \
        --backends "127.0.0.1:$BE1,127.0.0.1:$BE2" --workers "$w" $SERVAL_ARGS ;;
    serval-nohealth) # shellcheck disable=SC2086
      start_bg serval-nohealth "$cpus" env GOMAXPROCS="$gmp" "$WORK/bin/serval-lb" --host 127.0.0.1 --port "${PORT[serval-nohealth]}" \
        --backends "127.0.0.1:$BE1,127.0.0.1:$BE2" --workers "$w" --no-health $SERVAL_ARGS ;;
    serval-1proc) # shellcheck disable=SC2086
      start_bg serval-1proc "$cpus" env GOMAXPROCS="$gmp" "$WORK/bin/serval-lb" --host 127.0.0.1 --port "${PORT[serval-1proc]}" \
        --backends "127.0.0.1:$BE1,127.0.0.1:$BE2" $SERVAL_ARGS ;;
    nginx) start_bg nginx "$cpus" nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" -g 'daemon off;' ;;
    haproxy) start_bg haproxy "$cpus" haproxy -db -f "$WORK/haproxy.cfg" ;;
    goproxy) start_bg goproxy "$cpus" env GOMAXPROCS="$gmp" "$WORK/bin/goproxy" -listen "127.0.0.1:${PORT[goproxy]}" \
      -upstreams "http://127.0.0.1:$BE1,http://127.0.0.1:$BE2" ;;
  esac
  wait_http "${PORT[$t]}" /small || { log "$t did not come up; see $WORK/$t.log"; stop_name "$t"; return 1; }
}

check_target() { # bodies must arrive byte-exact in size through the proxy
  local t=$1 s b
  s=$(curl -fs --max-time 5 "http://127.0.0.1:${PORT[$t]}/small" | wc -c)
  b=$(curl -fs --max-time 5 "http://127.0.0.1:${PORT[$t]}/big" | wc -c)
  [[ $s == "$SMALL_BYTES" && $b == "$BIG_BYTES" ]] || { log "$t: wrong body sizes small=$s big=$b"; return 1; }
}

be_conns() { # connections accepted so far by both origins (each query adds one)
  local a b
  a=$(curl -fs --max-time 2 "http://127.0.0.1:$BE1/_conns" || echo 0)
  b=$(curl -fs --max-time 2 "http://127.0.0.1:$BE2/_conns" || echo 0)
  echo $((a + b))
}

for mode in $MODES; do
  case $mode in
    pinned) pcpu=$PROXY_CPU ccpu=$CLIENT_CPU gmp=1 workers=1 ;;
    shared) pcpu="" ccpu="" gmp=$(nproc) workers=$(nproc) ;;
    *) log "unknown mode $mode"; exit 1 ;;
  esac
  log "mode=$mode proxy_cpu=${pcpu:-any} client_cpu=${ccpu:-any} workers=$workers"
  write_configs "$workers"
  for p in $BE1 $BE2; do port_free $p || { log "origin port $p is taken"; exit 1; }; done
  start_bg origin1 "$ccpu" env GOMAXPROCS="$gmp" "$WORK/bin/origin" -listen "127.0.0.1:$BE1" -small "$SMALL_BYTES" -big "$BIG_BYTES"
  start_bg origin2 "$ccpu" env GOMAXPROCS="$gmp" "$WORK/bin/origin" -listen "127.0.0.1:$BE2" -small "$SMALL_BYTES" -big "$BIG_BYTES"
  wait_http $BE1 /small && wait_http $BE2 /small || { log "origins did not start"; exit 1; }

  live=()
  for t in $TARGETS; do
    available "$t" || { log "skip $t: not available"; continue; }
    start_target "$t" "$pcpu" "$gmp" "$workers" || continue
    check_target "$t" || { stop_name "$t"; continue; }
    live+=("$t")
  done
  log "targets: ${live[*]}"
  ((${#live[@]})) || { log "no target came up"; exit 1; }

  for t in "${live[@]}"; do # warm-up: fills upstream pools
    for size in $SIZES; do
      DURATION=$WARMUP run_wrk "$WORK/warmup-$mode-$t-$size.txt" "$ccpu" "http://127.0.0.1:${PORT[$t]}/$size"
    done
  done

  n=${#live[@]}
  if ((ROUNDS % n)); then
    log "note: $ROUNDS rounds of $n targets: the rotation is unbalanced (some targets run late in a round more often); ROUNDS=$n balances it"
  fi
  for ((r = 1; r <= ROUNDS; r++)); do
    for size in $SIZES; do
      for ((i = 0; i < n; i++)); do
        t=${live[(i + r - 1) % n]} # rotate the order every round
        pid=${PID_OF[$t]:-}
        bg=$(wait_quiet)
        u0=$(be_conns)
        read -r rps p50 p99 nreq errs cpu < <(measure "$t" "$pid" "$ccpu" "http://127.0.0.1:${PORT[$t]}/$size" \
          "$WORK/wrk-$mode-$size-$t-r$r.txt")
        u1=$(be_conns)
        nc=$((u1 - u0 - 2)) # each /_conns query is one new connection per origin
        echo "$mode,$size,$r,$t,$rps,$p50,$p99,$nreq,$errs,$cpu,$nc,$bg" >>"$CSV"
        log "$mode r$r $size $t: $rps req/s p50=${p50}us p99=${p99}us err=$errs proxyCPU=${cpu}s upconn=$nc bg=${bg}%"
      done
    done
  done
  for t in "${live[@]}"; do if [[ $t != direct ]]; then stop_name "$t"; fi; done
  stop_name origin1
  stop_name origin2
done

summary() {
  awk -F, -v head="wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds; medians" '
function med(s,   a,n,i,j,x) { n=split(s,a," "); for(i=2;i<=n;i++){x=a[i]+0; for(j=i-1;j>=1 && a[j]+0>x;j--) a[j+1]=a[j]; a[j+1]=x}
  return (n%2) ? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2 }
function mn(s,  a,n,i,m) { n=split(s,a," "); m=a[1]+0; for(i=2;i<=n;i++) if(a[i]+0<m) m=a[i]+0; return m }
function mx(s,  a,n,i,m) { n=split(s,a," "); m=a[1]+0; for(i=2;i<=n;i++) if(a[i]+0>m) m=a[i]+0; return m }
function fmtus(v) { return (v>=1000) ? sprintf("%.2fms", v/1000) : sprintf("%.0fus", v) }
NR==1 {next}
{ k=$1 SUBSEP $2 SUBSEP $4
  if (!(k in seen)) { seen[k]=1; order[++no]=k }
  rps[k]=rps[k] " " $5; p50[k]=p50[k] " " $6; p99[k]=p99[k] " " $7; err[k]+=$9
  upr[k]=upr[k] " " ($8>0 ? $10/$8*1e6 : 0); nc[k]=nc[k] " " $11; bg[k]=bg[k] " " $12
  rr[k,$3]=$5; ur[k,$3]=($8>0 ? $10/$8*1e6 : 0); pr[k,$3]=$7; if ($3+0>nr) nr=$3+0 }
END {
  printf "%s\n", head
  for (i=1;i<=no;i++) { split(order[i],f,SUBSEP); grp=f[1] SUBSEP f[2]
    if (grp in done) continue
    done[grp]=1
    printf "\n## mode=%s size=%s\n", f[1], f[2]
    printf "%-15s %10s %17s %9s %9s %6s %13s %7s %5s %4s\n", "target","req/s","min-max","p50","p99","ratio","proxy us/req","upconn","err","bg%"
    dk=grp SUBSEP "direct"; d=(dk in seen) ? med(rps[dk]) : 0
    for (j=1;j<=no;j++) { kk=order[j]; split(kk,g,SUBSEP); if (g[1]!=f[1] || g[2]!=f[2]) continue
      r=med(rps[kk]); ratio=(d>0)? sprintf("%.2f", r/d) : "NA"
      pu=(g[3]=="direct")?"-":sprintf("%.1f", med(upr[kk]))
      printf "%-15s %10.0f %8.0f-%-8.0f %9s %9s %6s %13s %7s %5d %4s\n", g[3], r, mn(rps[kk]), mx(rps[kk]), fmtus(med(p50[kk])), fmtus(med(p99[kk])), ratio, pu, med(nc[kk]), err[kk], mx(bg[kk]) }
    # Paired: Serval against each other proxy round by round (a round
    # runs every target within a minute, so the ratio leaves out most of
    # the host drift that separates rounds), with the median ratio.
    sk=grp SUBSEP "serval"
    if (!(sk in seen)) continue
    for (j=1;j<=no;j++) { kk=order[j]; split(kk,g,SUBSEP); if (g[1]!=f[1] || g[2]!=f[2] || g[3]=="direct" || g[3]=="serval") continue
      cu=""; cr=""; cp=""
      for (rd=1;rd<=nr;rd++) if ((sk,rd) in ur && (kk,rd) in ur && ur[kk,rd]>0 && rr[kk,rd]>0 && pr[kk,rd]>0) {
        cu=cu sprintf(" %.2f", ur[sk,rd]/ur[kk,rd]); cr=cr sprintf(" %.2f", rr[sk,rd]/rr[kk,rd]); cp=cp sprintf(" %.2f", pr[sk,rd]/pr[kk,rd]) }
      if (cu=="") continue
      printf "serval/%-8s per round: CPU per request%s (median %.2f); req/s%s (median %.2f); p99%s (median %.2f)\n", g[3], cu, med(cu), cr, med(cr), cp, med(cp) }
  }
}' "$CSV"
}
echo
summary | tee "$WORK/summary.txt"
if [[ -n ${RESULTS:-} ]]; then
  mkdir -p "$RESULTS"; cp "$WORK/summary.txt" "$CSV" "$RESULTS/"
fi
log "raw results: $CSV; wrk outputs and server logs: $WORK"
