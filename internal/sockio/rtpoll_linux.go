//go:build linux && !go1.27

package sockio

import (
	"net"
	"reflect"
	"sync/atomic"
	"unsafe"
)

// The runtime's readiness, read directly.
//
// Every socket of Go's net package is in the runtime's poller: an epoll
// set, edge-triggered, whose events leave a "ready" mark on the socket's
// pollDesc (or wake the goroutine parked on it). internal/poll reads
// first and waits second: it clears the mark, tries the read, and parks
// only on EAGAIN. A polled Conn waits first instead, when its last read
// emptied the socket, by calling the runtime's wait directly: the mark,
// left by any arrival since the last wait, makes it return at once;
// without one the goroutine parks until the next arrival, a deadline or
// a close, exactly as internal/poll's own wait does.
//
// Reaching it takes two things Go does not export: the runtime functions
// behind internal/poll (linked by name below; the runtime publishes them
// under these names for internal/poll) and the pollDesc of a socket (its
// address sits in net.TCPConn -> netFD -> poll.FD -> pollDesc.runtimeCtx,
// found by reflection once at startup, then read through fixed offsets).
// Both are checked against Go 1.26's runtime, and this file builds only
// before Go 1.27: with a newer Go, or when the fields are not where they
// were, polling is off and reads are the runtime's (rtpoll_other.go).

//go:linkname runtimePollWait internal/poll.runtime_pollWait
func runtimePollWait(ctx uintptr, mode int) int

//go:linkname runtimePollReset internal/poll.runtime_pollReset
func runtimePollReset(ctx uintptr, mode int) int

// The runtime's answers (runtime/netpoll.go).
const (
	pollNoError     = 0
	pollErrClosing  = 1
	pollErrTimeout  = 2
	pollNotPollable = 3

	// pdReady is a pollDesc's rg when a readiness mark is pending.
	pdReady = 1
	// rgOffset is where rg lies in the runtime's pollDesc: after link,
	// fd, fdseq (a word each) and atomicInfo (32 bits, padded).
	rgOffset = 4 * unsafe.Sizeof(uintptr(0))
)

// pdPath locates a socket's pollDesc from its *net.TCPConn: fdOff is
// the offset of the *netFD in a TCPConn, ctxOff that of runtimeCtx in a
// netFD. ok is false when the fields are not as expected.
var pdPath = func() (p struct {
	fdOff, ctxOff uintptr
	ok            bool
}) {
	t := reflect.TypeFor[net.TCPConn]()
	conn, ok := t.FieldByName("conn")
	if !ok || conn.Type.Kind() != reflect.Struct {
		return p
	}
	fd, ok := conn.Type.FieldByName("fd")
	if !ok || fd.Type.Kind() != reflect.Pointer || fd.Type.Elem().Kind() != reflect.Struct {
		return p
	}
	nfd := fd.Type.Elem()
	pfd, ok := nfd.FieldByName("pfd")
	if !ok || pfd.Type.Kind() != reflect.Struct {
		return p
	}
	pd, ok := pfd.Type.FieldByName("pd")
	if !ok || pd.Type.Kind() != reflect.Struct {
		return p
	}
	rc, ok := pd.Type.FieldByName("runtimeCtx")
	if !ok || rc.Type.Kind() != reflect.Uintptr {
		return p
	}
	p.fdOff = conn.Offset + fd.Offset
	p.ctxOff = pfd.Offset + pd.Offset + rc.Offset
	p.ok = true
	return p
}()

// runtimeReadiness reports whether this build can wait on the runtime's
// readiness directly. The waiting reader is woken by the runtime's poller
// as any net.Conn reader is, so it pays with any number of processors.
func runtimeReadiness() bool { return pdPath.ok }

// pollDescOf returns the runtime's pollDesc of tcp's socket (nil when
// none: a socket the runtime does not poll). The pollDesc is not Go heap
// memory; it lives as long as the socket is open.
func pollDescOf(tcp *net.TCPConn) unsafe.Pointer {
	nfd := *(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(tcp), pdPath.fdOff))
	if nfd == nil {
		return nil
	}
	return *(*unsafe.Pointer)(unsafe.Add(nfd, pdPath.ctxOff))
}

// readyPending reports whether an arrival marked pd ready since the
// last wait or reset consumed the mark.
func readyPending(pd unsafe.Pointer) bool {
	return atomic.LoadUintptr((*uintptr)(unsafe.Add(pd, rgOffset))) == pdReady
}
