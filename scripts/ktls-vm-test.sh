#!/usr/bin/env bash
# ktls-vm-test.sh: run the kernel-TLS tests in a VM whose kernel has the
# tls module (this machine's kernel has none, so here they skip):
#   - tlsconn: handshake handoff, every version and cipher, the zero-alloc
#     data path (-test.run 'KTLS|Offload');
#   - server: Serval end to end with kTLS termination and origination, the
#     splice path for Content-Length bodies (4 MiB each way, byte-exact,
#     offload asserted through the counters), the control-record fallback,
#     zero allocations per kTLS keep-alive request (-test.run 'KTLS').
#
# Builds each test binary statically, boots it through
# ../shared/ktls-vm/run-in-vm.sh (override with KTLS_VM=path/to/run-in-vm.sh)
# with KTLS_REQUIRE=1 so a kTLS regression fails instead of skipping, from
# the package directory so testdata/ resolves, and prints a summary.
# Extra arguments go to run-in-vm.sh (e.g. -v, --timeout 300).
# Exit status: the first failing test binary's (124 timeout, 125 VM failure).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vm=${KTLS_VM:-$root/../shared/ktls-vm/run-in-vm.sh}
if [[ ! -f $vm ]]; then
	echo "ktls-vm-test: $vm not found (set KTLS_VM=path/to/run-in-vm.sh)" >&2
	exit 125
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# package and -test.run pattern, one pair per VM run
runs=("tlsconn" 'KTLS|Offload' "server" 'KTLS')

status=0
: >"$tmp/out.txt"
for ((i = 0; i < ${#runs[@]}; i += 2)); do
	pkg=${runs[i]} pattern=${runs[i + 1]}
	cd "$root"
	CGO_ENABLED=0 go test -c -o "$tmp/$pkg.test" "./$pkg"
	cd "$root/$pkg"
	with=()
	[[ -d testdata ]] && with=(--with testdata)
	echo "==== $pkg: -test.run '$pattern'" | tee -a "$tmp/out.txt"
	set +e
	bash "$vm" "${with[@]}" --env KTLS_REQUIRE=1 "$@" -- \
		"$tmp/$pkg.test" -test.run "$pattern" -test.v 2>&1 | tee -a "$tmp/out.txt"
	s=${PIPESTATUS[0]}
	set -e
	echo "==== $pkg: exit status $s" | tee -a "$tmp/out.txt"
	if [[ $status -eq 0 && $s -ne 0 ]]; then
		status=$s
	fi
done

echo "---- ktls-vm-test summary ----"
for r in PASS FAIL SKIP; do
	printf '%s %d\n' "$r" "$(grep -cE "^\s*--- $r" "$tmp/out.txt" || true)"
done
echo "offloaded (version, cipher: connections checked):"
grep -E 'offloaded: TLS' "$tmp/out.txt" | sed 's/.*offloaded: /  /' | sort | uniq -c || true
echo "serval end to end:"
grep -E '^\s*--- (PASS|FAIL|SKIP): TestKTLS(Splice|CloseNotify|KeepAlive)' "$tmp/out.txt" | sed 's/^\s*/  /' || true
grep -E 'termination: offloaded' "$tmp/out.txt" | sed 's/^\s*/  /' || true
grep -E '^\s*--- FAIL' "$tmp/out.txt" || true
grep -E '^==== .*exit status' "$tmp/out.txt" || true
echo "ktls-vm-test: exit status $status"
exit "$status"
