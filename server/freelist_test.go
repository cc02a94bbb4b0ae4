package server

import (
	"context"
	"math"
	"net"
	"testing"
	"time"
)

// TestFreeListLIFO: the slot freed last is taken first (warm buffers);
// an empty list says so; len follows.
func TestFreeListLIFO(t *testing.T) {
	var f freeList
	f.init(4)
	if _, ok := f.pop(); ok {
		t.Fatal("pop from an empty list")
	}
	for _, i := range []int32{3, 1, 2} {
		f.push(i)
	}
	if f.len() != 3 {
		t.Fatalf("len %d", f.len())
	}
	for _, want := range []int32{2, 1, 3} {
		if got, ok := f.pop(); !ok || got != want {
			t.Fatalf("pop = %d, %v; want %d", got, ok, want)
		}
	}
}

// TestTakeSlotWaitsForEvicted: with every slot busy and one idle, the
// accept loop evicts it and takes its slot as soon as it is pushed back,
// even when a stale ready token was left from an earlier push.
func TestTakeSlotWaitsForEvicted(t *testing.T) {
	srv, _ := serve(t, &handler{}, nil, nil, func() Config {
		c := testConfig()
		c.ConnectionsMax, c.SlotWaitTimeout = 2, time.Second
		return c
	}())
	// Take both slots by hand, leaving a stale token in ready.
	a, _ := srv.free.pop()
	b, _ := srv.free.pop()
	srv.free.push(b)
	srv.free.pop()
	srv.slots[a].state.Store(stBusy)
	srv.slots[b].state.Store(stBusy)
	w := &slotWait{wait: time.NewTimer(time.Hour), rescan: time.NewTimer(time.Hour)}
	w.wait.Stop()
	w.rescan.Stop()
	began := time.Now()
	if _, ok := srv.takeSlot(context.Background(), w); ok {
		t.Fatal("took a slot with every slot busy and none idle")
	}
	if took := time.Since(began); took < 900*time.Millisecond || !w.shedding {
		t.Fatalf("gave up after %v, shedding %v; want SlotWaitTimeout (1s), then shedding", took, w.shedding)
	}
	began = time.Now()
	// At once: far below SlotWaitTimeout (slack for a loaded machine).
	if _, ok := srv.takeSlot(context.Background(), w); ok || time.Since(began) > 500*time.Millisecond {
		t.Fatalf("shedding: a full server took %v to refuse", time.Since(began))
	}
	// Slot b idle: takeSlot evicts it (expiring its connection's read);
	// its owner (here: us) frees it.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv.slots[b].nc = c1
	srv.slots[b].idleSince.Store(math.MinInt64) // idle long enough to evict
	srv.slots[b].state.Store(stIdle)
	go func() {
		for srv.slots[b].state.Load() != stEvicted {
			time.Sleep(time.Millisecond)
		}
		srv.slots[b].state.Store(stFree)
		srv.free.push(b)
	}()
	if got, ok := srv.takeSlot(context.Background(), w); !ok || got != b {
		t.Fatalf("takeSlot = %d, %v; want the evicted slot %d", got, ok, b)
	}
	// Back to a consistent state for the server's own shutdown.
	srv.slots[b].nc = nil
	srv.slots[a].state.Store(stFree)
	srv.slots[b].state.Store(stFree)
	srv.free.push(b)
	srv.free.push(a)
}
