package slab

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"unsafe"
)

func TestMake(t *testing.T) {
	a := New()
	defer a.Release()
	seen := map[uintptr]bool{}
	var prev uintptr
	for _, n := range []int{1, 63, 64, 100, 4095, 4096, 5000, 32 << 10, 128 << 10, chunkBytes + 1} {
		b := a.Make(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("Make(%d): len %d cap %d", n, len(b), cap(b))
		}
		for i := range b {
			if b[i] != 0 {
				t.Fatalf("Make(%d): byte %d is %d, want zeroed memory", n, i, b[i])
			}
		}
		p := uintptr(unsafe.Pointer(&b[0]))
		if enabled && p%lineBytes != 0 {
			t.Errorf("Make(%d) at %#x: not aligned to a cache line", n, p)
		}
		if enabled && prev != 0 && p%pageBytes == prev%pageBytes {
			t.Errorf("Make(%d) at %#x: the same offset in its page as the buffer before", n, p)
		}
		prev = p
		if seen[p] {
			t.Fatalf("Make(%d) handed out %#x twice", n, p)
		}
		seen[p] = true
		for i := range b {
			b[i] = 0xAA // overlapping buffers would show in the next ones
		}
	}
	if a.Make(0) != nil {
		t.Errorf("Make(0) is not nil")
	}
}

func TestPutReuses(t *testing.T) {
	if !enabled {
		t.Skip("buffers come from make here (not Linux, or the race detector): nothing to reuse")
	}
	a := New()
	defer a.Release()
	b := a.Make(8 << 10)
	b[0], b[len(b)-1] = 1, 2
	a.Put(b[:10])
	c := a.Make(8 << 10)
	if &c[0] != &b[0] {
		t.Fatalf("Make after Put did not reuse the buffer")
	}
	if c[0] != 0 || c[len(c)-1] != 0 {
		t.Fatalf("a reused buffer is not zeroed")
	}
	if d := a.Make(8 << 10); &d[0] == &b[0] {
		t.Fatalf("a buffer handed out twice")
	}
}

func TestReleaseReusesChunks(t *testing.T) {
	if !enabled {
		t.Skip("buffers come from make here (not Linux, or the race detector)")
	}
	a := New()
	b := a.Make(1 << 20)
	for i := range b {
		b[i] = 7
	}
	if a.Mapped() < 1<<20 {
		t.Fatalf("Mapped %d after a 1 MiB Make", a.Mapped())
	}
	first := &b[0]
	a.Release()
	if a.Mapped() != 0 {
		t.Fatalf("Mapped %d after Release", a.Mapped())
	}
	a2 := New()
	defer a2.Release()
	c := a2.Make(1 << 20)
	if &c[0] != first {
		t.Logf("the released chunk was not the one reused (another test's may be): fine")
	}
	for i := range c {
		if c[i] != 0 {
			t.Fatalf("memory of a released arena read %d at %d: want zero", c[i], i)
		}
	}
}

// TestOffHeap: the buffers do not count in the Go heap, so the collector
// does not let garbage grow to their size before it collects.
func TestOffHeap(t *testing.T) {
	if !enabled {
		t.Skip("buffers come from make here (not Linux, or the race detector): they are on the heap")
	}
	a := New()
	defer a.Release()
	before := heapLive()
	bufs := make([][]byte, 0, 1024)
	for range 1024 {
		bufs = append(bufs, a.Make(256<<10)) // 256 MiB in all
	}
	after := heapLive()
	if grew := int64(after) - int64(before); grew > 16<<20 {
		t.Fatalf("the Go heap grew by %d bytes for 256 MiB of arena buffers", grew)
	}
	runtime.KeepAlive(bufs)
}

func heapLive() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestConcurrent(t *testing.T) {
	a := New()
	defer a.Release()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				b := a.Make(1000 + g*4096 + i%3)
				for j := range b {
					b[j] = byte(g)
				}
				for j := range b {
					if b[j] != byte(g) {
						t.Errorf("goroutine %d: a buffer shared with another", g)
						return
					}
				}
				if i%2 == 0 {
					a.Put(b)
				}
			}
		}()
	}
	wg.Wait()
}
