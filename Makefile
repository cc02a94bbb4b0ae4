# Convenience targets; CI runs .ci/run.
GO ?= go
# A count of executions, not a duration: go.dev/issue/75804 (Go 1.26's
# fuzz coordinator can fail a duration run at its deadline).
FUZZTIME ?= 3000000x
# The end-to-end targets (FuzzProxy*) run over real sockets, ~1 ms each.
FUZZTIME_E2E ?= 100000x

.PHONY: all test race vet fmt fuzz bench bench-echo bench-proxy bench-tls chaos ktls-vm ci

all: vet test

test:
	$(GO) test ./...

race:
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Every native fuzz target, FUZZTIME each (default 3M executions, about a
# minute here; FUZZTIME_E2E for the end-to-end ones, several minutes).
fuzz:
	@set -e; for dir in $$(git ls-files '*_test.go' | xargs -r grep -l '^func Fuzz' | xargs -r -n1 dirname | sort -u); do \
	  for t in $$($(GO) test -list '^Fuzz' ./$$dir | grep '^Fuzz'); do \
	    ft=$(FUZZTIME) min=60s; case $$t in FuzzProxy*) ft=$(FUZZTIME_E2E) min=20x;; esac; \
	    echo "--- fuzz ./$$dir $$t ($$ft)"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $$ft -fuzzminimizetime $$min ./$$dir; \
	  done; \
	done

# Go micro-benchmarks with allocation counts.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Loopback load tests (install wrk/nginx/haproxy/openssl through apt if missing).
bench-echo:
	bash bench/echo.sh

bench-proxy:
	bash bench/proxy.sh

bench-tls:
	bash bench/tls.sh

# Integrity under client aborts through examples/lb (plain and TLS, one and
# two processors; also part of CI).
chaos:
	bash bench/chaos.sh

# Kernel TLS tests in a VM (needs shared/ktls-vm beside the checkout).
ktls-vm:
	bash scripts/ktls-vm-test.sh

ci:
	bash .ci/run
