package main

import (
	"io"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/accesslog"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/metrics"
)

// TestWrappersKeepHooks: whatever the flags wrap around lb.Handler
// (--no-health, --metrics-addr, --access-log, --debug), the server finds
// every hook lb.Handler has on the wrapper. One lost behind them is lost
// silently: OnError once was, and with it every retry of a request that
// met a dead backend, whenever metrics or an access log were on.
func TestWrappersKeepHooks(t *testing.T) {
	hooks := []struct {
		name string
		has  func(any) bool
	}{
		{"RequestHook", func(v any) bool { _, ok := v.(serval.RequestHook); return ok }},
		{"RequestBodyHook", func(v any) bool { _, ok := v.(serval.RequestBodyHook); return ok }},
		{"UpstreamConnectHook", func(v any) bool { _, ok := v.(serval.UpstreamConnectHook); return ok }},
		{"UpstreamRequestHook", func(v any) bool { _, ok := v.(serval.UpstreamRequestHook); return ok }},
		{"ResponseHook", func(v any) bool { _, ok := v.(serval.ResponseHook); return ok }},
		{"ResponseBodyHook", func(v any) bool { _, ok := v.(serval.ResponseBodyHook); return ok }},
		{"ErrorHook", func(v any) bool { _, ok := v.(serval.ErrorHook); return ok }},
		{"ConnectionOpenHook", func(v any) bool { _, ok := v.(serval.ConnectionOpenHook); return ok }},
		{"ConnectionCloseHook", func(v any) bool { _, ok := v.(serval.ConnectionCloseHook); return ok }},
		{"ChunkStreamer", func(v any) bool { _, ok := v.(serval.ChunkStreamer); return ok }},
		{"UpstreamDoneHook", func(v any) bool { _, ok := v.(serval.UpstreamDoneHook); return ok }},
	}
	o, code, ok := parseFlags([]string{"--backends", "127.0.0.1:1,127.0.0.1:2"}, io.Discard)
	if !ok {
		t.Fatalf("flags: code %d", code)
	}
	table, err := lb.ParseBackends(o.backends)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHandler(&o, table, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if !hooks[6].has(h) {
		t.Fatal("lb.Handler has no OnError: the test's premise is gone, update it")
	}
	access, err := accesslog.New(accesslog.Config{Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	for mask := range 16 {
		o := o
		o.noHealth, o.debug = mask&1 != 0, mask&8 != 0
		var counters *metrics.Counters
		if mask&2 != 0 {
			counters = metrics.New()
		}
		var aw *accesslog.Writer
		if mask&4 != 0 {
			aw = access
		}
		w := wrapHandler(h, &o, aw, counters, discardLogger())
		for _, hk := range hooks {
			if hk.has(h) && !hk.has(w) {
				t.Errorf("flags %s: the wrapper %T lost %s", flagNames(mask), w, hk.name)
			}
		}
		if mask&12 != 0 {
			if _, ok := w.(serval.LogHook); !ok {
				t.Errorf("flags %s: no OnLog behind --access-log or --debug", flagNames(mask))
			}
		}
	}
}

// flagNames names the flags of TestWrappersKeepHooks's mask.
func flagNames(mask int) string {
	var on []string
	for i, f := range []string{"--no-health", "--metrics-addr", "--access-log", "--debug"} {
		if mask&(1<<i) != 0 {
			on = append(on, f)
		}
	}
	return "[" + strings.Join(on, " ") + "]"
}
