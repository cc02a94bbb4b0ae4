//go:build linux && !race

package server

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func heapLive() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestBuffersOffHeap: the buffers of a server's slots and of its proxy
// sessions (about 320 KiB a slot) are outside the Go heap, so the garbage
// collector paces itself on what the server allocates as it runs (TLS
// handshakes, new connections) instead of letting that garbage grow to
// the size of the slot table; and the slots' are given back when the
// server is garbage (proxy.TestSessionBuffersReleased: the sessions').
func TestBuffersOffHeap(t *testing.T) {
	before := heapLive()
	cfg := DefaultConfig()
	cfg.ConnectionsMax = 1024
	s, err := New(static{}, nil, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	arena := s.arena
	mapped := arena.Mapped()
	if mapped < 1024*cfg.ReadBufferBytes {
		t.Fatalf("the arenas mapped %d bytes for 1024 slots", mapped)
	}
	grew := int64(heapLive()) - int64(before)
	t.Logf("1024 slots: %d MiB of slot buffers mapped outside the heap (the sessions' are the forwarder's), the heap grew by %d KiB", mapped>>20, grew>>10)
	// What stays on the heap is what holds pointers: the slots, their
	// field tables (about 36 KiB a slot); the buffers are some 290 MiB.
	if grew > 128<<20 {
		t.Fatalf("the Go heap grew by %d bytes for a server of 1024 slots: its buffers are on the heap", grew)
	}
	runtime.KeepAlive(s)
	s = nil
	deadline := time.Now().Add(testTimeout)
	for arena.Mapped() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the arena of a server that is garbage still maps %d bytes", arena.Mapped())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
