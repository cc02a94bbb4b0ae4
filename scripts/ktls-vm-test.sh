#!/usr/bin/env bash
# ktls-vm-test.sh: run the tlsconn kernel-TLS tests in a VM whose kernel
# has the tls module (this machine's kernel has none, so here they skip).
#
# Builds the tlsconn test binary statically, boots it through
# ../shared/ktls-vm/run-in-vm.sh (override with KTLS_VM=path/to/run-in-vm.sh)
# with KTLS_REQUIRE=1 so a kTLS regression fails instead of skipping, from
# the tlsconn directory so testdata/ resolves, and prints a summary.
# Extra arguments go to run-in-vm.sh (e.g. -v, --timeout 300).
# Exit status: the test binary's (124 timeout, 125 VM failure).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vm=${KTLS_VM:-$root/../shared/ktls-vm/run-in-vm.sh}
if [[ ! -f $vm ]]; then
	echo "ktls-vm-test: $vm not found (set KTLS_VM=path/to/run-in-vm.sh)" >&2
	exit 125
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$root"
CGO_ENABLED=0 go test -c -o "$tmp/tlsconn.test" ./tlsconn

cd "$root/tlsconn"
with=()
[[ -d testdata ]] && with=(--with testdata)
set +e
bash "$vm" "${with[@]}" --env KTLS_REQUIRE=1 "$@" -- \
	"$tmp/tlsconn.test" -test.run 'KTLS|Offload' -test.v 2>&1 | tee "$tmp/out.txt"
status=${PIPESTATUS[0]}
set -e

echo "---- ktls-vm-test summary ----"
for r in PASS FAIL SKIP; do
	printf '%s %d\n' "$r" "$(grep -cE "^\s*--- $r" "$tmp/out.txt" || true)"
done
echo "offloaded (version, cipher: connections checked):"
grep -E 'offloaded: TLS' "$tmp/out.txt" | sed 's/.*offloaded: /  /' | sort | uniq -c || true
grep -E '^\s*--- FAIL' "$tmp/out.txt" || true
echo "ktls-vm-test: exit status $status"
exit "$status"
