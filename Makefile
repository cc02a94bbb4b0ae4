# Convenience targets; CI runs .ci/run.
GO ?= go
FUZZTIME ?= 60s

.PHONY: all test race vet fmt fuzz bench bench-echo bench-proxy ci

all: vet test

test:
	$(GO) test ./...

race:
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Every native fuzz target, FUZZTIME each (default 60s).
fuzz:
	@set -e; for dir in $$(git ls-files '*_test.go' | xargs -r grep -l '^func Fuzz' | xargs -r -n1 dirname | sort -u); do \
	  for t in $$($(GO) test -list '^Fuzz' ./$$dir | grep '^Fuzz'); do \
	    echo "--- fuzz ./$$dir $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./$$dir; \
	  done; \
	done

# Go micro-benchmarks with allocation counts.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Loopback load tests (install wrk/nginx/haproxy through apt if missing).
bench-echo:
	bash bench/echo.sh

bench-proxy:
	bash bench/proxy.sh

ci:
	bash .ci/run
