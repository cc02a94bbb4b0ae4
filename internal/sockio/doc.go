// Package sockio reads and writes TCP sockets with raw system calls.
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
// Layer: internal infrastructure, standard library only.
package sockio
