//go:build !unix

package server

import (
	"net"
	"time"
)

// discardArrived does nothing here: the close may then be a reset.
func discardArrived(net.Conn, []byte) {}

// writeNoWait writes b on nc, bounded by a short write deadline (it
// never waits in practice: a new socket's buffer is empty), and reports
// whether all of b went.
func writeNoWait(nc net.Conn, b []byte) bool {
	nc.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	n, err := nc.Write(b)
	return err == nil && n == len(b)
}
