// Package sockio reads and writes TCP sockets with raw system calls, and
// reads them only when they are ready.
//
// Go's net package issues every read(2) and write(2) through
// syscall.Syscall, which tells the scheduler the goroutine may block: the
// runtime's monitor then hands the processor to another thread when the
// call lasts past its tick, and takes it back after. Go's sockets are
// non-blocking, so these calls never block; on a loaded proxy the
// hand-offs (futex wake-ups, thread switches) cost more than the calls.
// Conn makes the same calls with syscall.RawSyscall through the socket's
// syscall.RawConn, so the runtime's poller still parks the goroutine on
// EAGAIN and deadlines still apply.
//
// A polled Conn (Poll, Linux) goes further: after a read that emptied the
// socket, it waits on the runtime's readiness for the socket before the
// next read, so the read(2) that fails with EAGAIN before every wait is
// gone; its splice (SpliceTo) waits the same way. See poll_linux.go for
// the design and its invariants, rtpoll_linux.go for how the runtime's
// readiness is reached (Go 1.26 only: with a newer Go, Poll does
// nothing). Poll does nothing under the race detector either (reads go
// through net, whose synchronisation the detector understands).
//
// Layer: internal infrastructure, standard library only.
package sockio
