package server

import (
	"sync"

	"github.com/servalproxy/serval/internal/slab"
)

// bufSet is one connection's buffers: the read buffer, the write buffer
// (response heads; OnRequest's buf) and pend (responses kept back for a
// pipelined batch). A server has one set per slot, allocated in New.
type bufSet struct {
	r, w, p []byte
	// owner is the slot holding the set, -1 while it is in a stack: an
	// assertion that no two connections ever share one.
	owner int32
}

// bufSets lends the slots' buffer sets, last in first out. A plain
// connection holds a set while it has something to read, parse or
// answer, and gives it back while it waits, idle, for its next request
// (slot.readFirst, which waits for readiness without reading; a new
// connection reads its first request with the set it took at open, and
// one whose last request was forwarded keeps its set): the
// next request to arrive, on whichever connection, takes the set the last
// one used, still warm in the CPU's caches. With a set fixed per slot, 500
// keep-alive clients meant 500 sets taking turns, each cold by its next
// request (bench/HISTORY.md, twenty-third session). A TLS connection (its
// reads go through the TLS layer, which cannot wait without reading) and
// one the readiness poller does not carry hold theirs from open to
// release, as every connection did before.
//
// The sets are split in shards, as many as GOMAXPROCS when the server was
// made, slot i's set in shard i % shards, so goroutines running in
// parallel do not all meet on one lock (examples/lb's workers run with one
// processor: one shard). A shard holds one set per slot that takes from
// it, and a slot holds at most one: take never finds a shard empty.
type bufSets struct {
	sets   []bufSet
	shards []setShard
}

type setShard struct {
	mu   sync.Mutex
	free []int32 // indexes into sets; the top is the warmest
	_    [64]byte
}

func (b *bufSets) init(a *slab.Arena, slots, shards, readBytes, writeBytes int) {
	b.sets = make([]bufSet, slots)
	b.shards = make([]setShard, min(slots, max(1, shards)))
	for i := range b.shards {
		b.shards[i].free = make([]int32, 0, (slots+len(b.shards)-1)/len(b.shards))
	}
	for i := range b.sets {
		b.sets[i] = bufSet{
			r:     a.Make(readBytes),
			w:     a.Make(writeBytes),
			p:     a.Make(writeBytes / 2)[:0],
			owner: -1,
		}
	}
	// Pushed in reverse, so a shard's lower-numbered sets lie on top:
	// the first sets it lends are its first.
	for i := slots - 1; i >= 0; i-- {
		sh := &b.shards[i%len(b.shards)]
		sh.free = append(sh.free, int32(i))
	}
}

// shard is the shard slot idx takes from.
func (b *bufSets) shard(idx int32) int { return int(idx) % len(b.shards) }

// take pops shard's warmest set for slot owner.
func (b *bufSets) take(shard int, owner int32) int32 {
	sh := &b.shards[shard]
	sh.mu.Lock()
	n := len(sh.free)
	if n == 0 {
		sh.mu.Unlock()
		panic("server: no buffer set left: a slot holds two")
	}
	i := sh.free[n-1]
	sh.free = sh.free[:n-1]
	sh.mu.Unlock()
	set := &b.sets[i]
	if set.owner != -1 {
		panic("server: a lent buffer set is still held")
	}
	set.owner = owner
	return i
}

// put gives set i back to shard.
func (b *bufSets) put(shard int, i int32, owner int32) {
	set := &b.sets[i]
	if set.owner != owner {
		panic("server: a buffer set given back by a slot that does not hold it")
	}
	set.owner = -1
	sh := &b.shards[shard]
	sh.mu.Lock()
	sh.free = append(sh.free, i)
	sh.mu.Unlock()
}
