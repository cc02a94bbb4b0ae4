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
