# bench/lib.sh - helpers shared by bench/echo.sh and bench/proxy.sh.
# Sourced, not run. Loopback only; every process started through start_bg
# is recorded by PID and stopped by PID on exit (never by name).

export LC_ALL=C
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ensure_tools CMD... : install the Debian packages for missing commands.
ensure_tools() {
  local -A pkg=([wrk]=wrk [nginx]=nginx [haproxy]=haproxy [curl]=curl [taskset]=util-linux [ss]=iproute2 [ps]=procps)
  local c missing=()
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("${pkg[$c]:-$c}")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) != 0 ]]; then log "missing ${missing[*]}: install them (apt-get install ${missing[*]})"; exit 1; fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_go() {
  command -v go >/dev/null 2>&1 || export PATH=/usr/local/go/bin:$PATH
  command -v go >/dev/null 2>&1 || { log "go not found"; exit 1; }
  export GOTOOLCHAIN=local
}

# ---------------------------------------------------------------- processes
declare -A PID_OF=()
alive() { # running and not a zombie
  local st
  st=$(awk '{sub(/^.*\) /,""); print $1}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}
stop_pid() { # TERM, wait up to 5 s, KILL, reap
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
stop_name() { local p=${PID_OF[$1]:-}; if [[ -n $p ]]; then stop_pid "$p"; fi; unset "PID_OF[$1]"; }
stop_all() { local n; for n in "${!PID_OF[@]}"; do stop_name "$n"; done; }
trap stop_all EXIT
trap 'exit 130' INT TERM

# start_bg NAME CPULIST CMD... (CPULIST empty: not pinned). taskset and env
# exec the command, so $! is the server's own PID.
start_bg() {
  local name=$1 cpus=$2; shift 2
  if [[ -n $cpus ]]; then taskset -c "$cpus" "$@" >"$WORK/$name.log" 2>&1 &
  else "$@" >"$WORK/$name.log" 2>&1 &
  fi
  PID_OF[$name]=$!
}
wait_http() { # wait_http PORT PATH: up to 15 s for a 2xx
  local i
  for i in $(seq 150); do
    curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  return 1
}
port_free() { ! ss -Hltn "( sport = :$1 )" | grep -q .; }

# ------------------------------------------------------------ measurements
# CPU ticks (utime+stime) of a PID and its direct children (nginx workers).
proc_ticks() {
  local p=$1 q t=0 v
  for q in $p $(ps -o pid= --ppid "$p" 2>/dev/null); do
    v=$(awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$q/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

# parse_wrk FILE -> "rps p50_us p99_us requests errors"
parse_wrk() {
  awk 'function us(v){ if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1e6; return v+0 }
    /^ *50%/ {p50=us($2)} /^ *99%/ {p99=us($2)}
    / requests in / {n=$1}
    /^Requests\/sec:/ {rps=$2}
    /Socket errors:/ {s=$0; sub(/.*errors:/,"",s); gsub(/[^0-9 ]/," ",s); m=split(s,f," "); for(i=1;i<=m;i++) err+=f[i]}
    /Non-2xx or 3xx/ {err+=$NF}
    END {printf "%s %s %s %s %d\n", rps+0, p50+0, p99+0, n+0, err+0}' "$1"
}

# run_wrk OUT CPULIST URL : one bounded load run (wrk -d DURATION).
# (WRK_SCRIPT, when set, is a wrk Lua script given PIPELINE as its argument.)
run_wrk() {
  local out=$1 cpus=$2 url=$3 cmd=(wrk) script=()
  [[ -n $cpus ]] && cmd=(taskset -c "$cpus" wrk)
  [[ -n ${WRK_SCRIPT:-} ]] && script=(-s "$WRK_SCRIPT")
  "${cmd[@]}" -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${script[@]}" "$url" ${WRK_SCRIPT:+-- "${PIPELINE:-1}"} >"$out" 2>&1 || true
}

# measure NAME PID CPULIST URL OUTFILE -> "rps p50 p99 requests errors cpu_s"
# (cpu_s: the server's utime+stime, children included, during the run)
measure() {
  local pid=$2 cpus=$3 url=$4 out=$5 k0=0 k1=0
  [[ -n $pid ]] && k0=$(proc_ticks "$pid")
  run_wrk "$out" "$cpus" "$url"
  [[ -n $pid ]] && k1=$(proc_ticks "$pid")
  echo "$(parse_wrk "$out") $(awk -v a="$k0" -v b="$k1" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz}')"
}

# median of numbers
median() { tr ' ' '\n' <<<"$*" | grep . | sort -g | awk '{a[NR]=$1} END{if(NR==0){print 0}else if(NR%2){print a[(NR+1)/2]}else{print (a[NR/2]+a[NR/2+1])/2}}'; }
fmt_us() { awk -v v="$1" 'BEGIN{ if (v>=1000) printf "%.2fms", v/1000; else printf "%.0fus", v }'; }

# machine_busy: % busy of all CPUs over a 1 s sample.
machine_busy() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", (y[2]>x[2]) ? 100*(y[1]-x[1])/(y[2]-x[2]) : 0}'
}
# wait_quiet: our servers are idle between runs, so busy CPU now is someone
# else's. Waits up to QUIET_WAIT s (default 30) for at most QUIET_MAX %
# (default 15) and prints the last sample (recorded as bg% beside results:
# a row measured on a busy machine is suspect).
wait_quiet() {
  local t0=$SECONDS bz
  while :; do
    bz=$(machine_busy)
    if ((bz <= ${QUIET_MAX:-15})); then echo "$bz"; return; fi
    if ((SECONDS - t0 >= ${QUIET_WAIT:-30})); then log "machine still ${bz}% busy after ${QUIET_WAIT:-30}s; running anyway"; echo "$bz"; return; fi
    sleep 2
  done
}
