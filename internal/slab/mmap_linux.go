//go:build linux && !race

package slab

import (
	"sync"
	"syscall"
)

const enabled = true

// spare holds the chunks released arenas gave back, emptied.
var spare struct {
	mu     sync.Mutex
	chunks [][]byte
}

// takeChunk returns a zeroed mapping of at least n bytes (a spare one
// when one is large enough), or nil when none can be had.
func takeChunk(n int) []byte {
	spare.mu.Lock()
	for i, c := range spare.chunks {
		if len(c) >= n {
			last := len(spare.chunks) - 1
			spare.chunks[i] = spare.chunks[last]
			spare.chunks[last] = nil
			spare.chunks = spare.chunks[:last]
			spare.mu.Unlock()
			return c
		}
	}
	spare.mu.Unlock()
	n = (n + pageBytes - 1) &^ (pageBytes - 1)
	c, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return c
}

// giveChunk empties c (its pages go back to the system and read as zero
// again) and keeps it for the next takeChunk. A chunk that cannot be
// emptied is unmapped.
func giveChunk(c []byte) {
	if syscall.Madvise(c, syscall.MADV_DONTNEED) != nil {
		_ = syscall.Munmap(c)
		return
	}
	spare.mu.Lock()
	spare.chunks = append(spare.chunks, c)
	spare.mu.Unlock()
}
