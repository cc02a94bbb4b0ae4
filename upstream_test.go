package serval

import (
	"strings"
	"sync"
	"testing"
)

// TestAddrConcurrent: an upstream written as a literal has its address
// computed by its first users, possibly many at once (the race detector
// checks it), and every one of them gets it.
func TestAddrConcurrent(t *testing.T) {
	u := &Upstream{Host: "127.0.0.1", Port: 8080}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got := u.Addr(); got != "127.0.0.1:8080" {
				t.Errorf("Addr() = %q", got)
			}
		})
	}
	wg.Wait()
	v := NewUpstream("::1", 443, 3)
	if v.Addr() != "[::1]:443" || !u.SameBackend(u) || u.SameBackend(&v) {
		t.Errorf("NewUpstream: %q", v.Addr())
	}
	w := *u
	if !w.SameBackend(u) {
		t.Error("a copy is not the same backend")
	}
}

type twoHooks struct{}

func (twoHooks) SelectUpstream(*Exchange, *Request) *Upstream        { return nil }
func (twoHooks) OnLog(*Exchange, *LogEntry)                          {}
func (twoHooks) OnError(*Exchange, *ProxyError) (a ErrorAction)      { return a }
func (twoHooks) OnUpstreamDone(*Exchange, *Upstream, UpstreamResult) {}

// wrapped embeds an interface: only Handler's method is promoted.
type wrapped struct{ Handler }

func TestHooksString(t *testing.T) {
	if got := DetectHooks(twoHooks{}).String(); got != "OnError OnLog OnUpstreamDone" {
		t.Errorf("hooks %q", got)
	}
	if got := DetectHooks(wrapped{twoHooks{}}).String(); got != "none" {
		t.Errorf("a wrapper embedding Handler: hooks %q, want none (the doc says they are lost)", got)
	}
}

func TestUpstreamNoteVersion(t *testing.T) {
	u := NewUpstream("127.0.0.1", 1, 0)
	if u.HTTP10() {
		t.Fatal("a new upstream is taken for HTTP/1.0")
	}
	u.NoteVersion(Version10)
	if !u.HTTP10() {
		t.Fatal("an HTTP/1.0 answer was not noted")
	}
	u.NoteVersion(Version11)
	if u.HTTP10() {
		t.Fatal("an HTTP/1.1 answer did not clear it")
	}
	if n := testing.AllocsPerRun(100, func() { u.NoteVersion(Version11); _ = u.HTTP10() }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// TestParseUpstreamsRejects: entries that cannot name a backend are
// refused, a space after a comma included (" b:2" would never resolve:
// a backend that only ever fails, behind a warning at best).
func TestParseUpstreamsRejects(t *testing.T) {
	for _, bad := range []string{"", "a:1,", "a:1,,b:2", "a", "a:0", "a:65536", ":1", "a:1, b:2", " a:1", "a\t:1", "a b:1"} {
		if _, err := ParseUpstreams(bad); err == nil {
			t.Errorf("ParseUpstreams(%q) accepted", bad)
		}
	}
	// A URL is no host:port, and the error says so (it said "too many
	// colons in address").
	if _, err := ParseUpstreams("http://127.0.0.1:80"); err == nil || !strings.Contains(err.Error(), "without a scheme") {
		t.Errorf("ParseUpstreams(a URL): %v", err)
	}
	table, err := ParseUpstreams("a:1,[::1]:2,b.example:3")
	if err != nil || len(table) != 3 || table[1].Addr() != "[::1]:2" {
		t.Fatalf("ParseUpstreams: %v, %v", table, err)
	}
}
