//go:build unix

package server

import (
	"net"
	"syscall"
)

// discardArrived reads what has arrived on nc into buf, once, without
// waiting (a read deadline already past would not even try).
func discardArrived(nc net.Conn, buf []byte) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		syscall.Read(int(fd), buf)
		return true // done: EAGAIN means nothing arrived yet, and that is fine
	})
}

// writeNoWait writes b on nc with one write(2) that does not wait for
// room, and reports whether all of b went. No write deadline bounds it:
// a deadline short enough not to hold up the accept loop (it was 10 ms)
// could pass between setting it and the Write, when a loaded machine
// pauses the goroutine there, and a Write past its deadline does not even
// try: the 503 was lost and the close, with the request unread, reset
// the client (TestSlotWaitSheds and TestSlotsFull saw that under the race
// detector on a busy machine).
func writeNoWait(nc net.Conn, b []byte) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := -1
	rc.Write(func(fd uintptr) bool {
		n, _ = syscall.Write(int(fd), b)
		return true // done: EAGAIN (no room) fails the write, and that is fine
	})
	return n == len(b)
}
