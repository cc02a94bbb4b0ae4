package slab

import (
	"sync"
	"unsafe"
)

// chunkBytes is the size of the mappings buffers are carved from; a
// larger buffer gets a mapping of its own.
const chunkBytes = 32 << 20

// Buffers start at a page boundary plus a color of 0 to colors-1 cache
// lines, taken colorStride apart (coprime with colors) from one buffer to
// the next.
const (
	pageBytes   = 4 << 10
	lineBytes   = 64
	colors      = pageBytes / lineBytes
	colorStride = 11
)

// Arena hands out buffers from mappings it owns. Its methods are safe for
// concurrent use.
type Arena struct {
	mu     sync.Mutex
	chunks [][]byte         // every mapping taken, for Release
	rest   []byte           // the unused tail of the last chunk
	free   map[int][][]byte // buffers given back (Put), by capacity
	color  int              // buffers carved so far: the next one's color
}

// New returns an empty arena: it maps memory on its first Make.
func New() *Arena { return &Arena{} }

// Make returns a zeroed buffer of length and capacity n. The buffer lives
// until Put or Release; views into it must not be used after either.
func (a *Arena) Make(n int) []byte {
	if n <= 0 {
		return nil
	}
	if !enabled {
		return make([]byte, n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		l[len(l)-1] = nil
		a.free[n] = l[:len(l)-1]
		clear(b)
		return b
	}
	// Each buffer starts at a page boundary plus its color, a number of
	// cache lines that differs from one buffer to the next: the buffers'
	// first lines (a head, the hot part of each) then fall in different
	// sets of the CPU caches, where page-aligned ones would all compete
	// for one.
	color := (a.color * colorStride % colors) * lineBytes
	a.color++
	size := (n + lineBytes - 1) &^ (lineBytes - 1)
	pad := color
	if len(a.rest) > 0 {
		pad += int(-uintptr(unsafe.Pointer(unsafe.SliceData(a.rest)))) & (pageBytes - 1)
	}
	if len(a.rest) < pad+size {
		c := takeChunk(max(color+size, chunkBytes)) // page-aligned
		if c == nil {
			return make([]byte, n) // no mapping: the heap it is
		}
		a.chunks = append(a.chunks, c)
		a.rest, pad = c, color
	}
	b := a.rest[pad : pad+n : pad+n]
	a.rest = a.rest[pad+size:]
	return b
}

// Put gives b, a buffer from Make with its capacity intact, back for the
// next Make of that size. b must not be used after.
func (a *Arena) Put(b []byte) {
	if !enabled || cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	a.mu.Lock()
	if a.free == nil {
		a.free = make(map[int][][]byte)
	}
	a.free[len(b)] = append(a.free[len(b)], b)
	a.mu.Unlock()
}

// Release gives all of the arena's memory back: its pages to the system,
// its mappings to the next arena. No buffer from it may be used after.
// The arena may be used again (it maps anew).
func (a *Arena) Release() {
	a.mu.Lock()
	chunks := a.chunks
	a.chunks, a.rest, a.free = nil, nil, nil
	a.mu.Unlock()
	for _, c := range chunks {
		giveChunk(c)
	}
}

// Mapped returns the bytes the arena has mapped (tests, diagnostics).
func (a *Arena) Mapped() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.chunks {
		n += len(c)
	}
	return n
}
