// Package slab hands out the byte buffers a server sizes at startup
// (connection slots' read and write buffers, the proxy sessions' head and
// body buffers) from memory outside the Go heap.
//
// Why: those buffers are most of a server's memory (about 320 KiB a
// connection slot with the defaults: 330 MB for 1024 slots) and they live
// as long as the server. On the heap the garbage collector counts them as
// live, and with GOGC's default it lets garbage grow to the size of the
// live heap before it collects: a server with 1024 slots let about 300 MB
// of garbage (TLS handshakes leave some 90 KB each) pile up before its
// first collection, and one with 4096 slots above a gigabyte, whatever
// the number of clients. Outside the heap the collector paces itself on
// what the program allocates as it runs, so its memory follows the load;
// the buffers cost the pages that are touched, as before (an anonymous
// mapping is backed on first touch, as the heap's fresh spans are).
//
// An Arena maps memory in chunks and carves buffers from them; Put gives
// a buffer back for the next Make of its size, and Release returns all of
// it when the owner is gone (its chunks, emptied with MADV_DONTNEED, are
// kept for the next Arena, so a process that makes servers one after
// another, as tests do, reuses its address space). The buffers hold no Go
// pointers, so the collector has nothing to see in them.
//
// Elsewhere than Linux, under the race detector (which checks only Go
// memory) or when a mapping fails, buffers come from make.
//
// Layer: internal infrastructure, standard library only.
package slab
