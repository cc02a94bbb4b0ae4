//go:build linux && !race

package proxy

import (
	"runtime"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestSessionBuffersReleased: the sessions' buffers come from the
// forwarder's arena, outside the Go heap; a retired session's go back for
// the next session, and all of them go when the forwarder is garbage.
func TestSessionBuffersReleased(t *testing.T) {
	f, err := New(Config{}, &handler{}, serval.Hooks{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := f.NewSession()
	mapped := f.arena.Mapped()
	if mapped < f.cfg.BufferBytes {
		t.Fatalf("the arena mapped %d bytes for a session", mapped)
	}
	scratch := &s.scratch[:1][0]
	s.Retire()
	s = f.NewSession()
	if &s.scratch[:1][0] != scratch {
		t.Errorf("a new session did not take over the retired one's buffers")
	}
	if got := f.arena.Mapped(); got != mapped {
		t.Errorf("the arena grew from %d to %d bytes for a session that replaced a retired one", mapped, got)
	}
	s.Close()
	arena := f.arena
	runtime.KeepAlive(f)
	f, s = nil, nil
	deadline := time.Now().Add(5 * time.Second)
	for arena.Mapped() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the arena of a forwarder that is garbage still maps %d bytes", arena.Mapped())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
