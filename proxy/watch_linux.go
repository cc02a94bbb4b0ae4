//go:build linux

package proxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientGone asks the kernel whether the client of d closed its
// connection or reset it: the socket is in CLOSE_WAIT (its FIN arrived)
// or CLOSE (a reset), and, on a plain connection, none of its bytes wait
// unread (a FIN behind a pipelined request leaves that request to be
// answered). Over TLS, queued bytes may be the close_notify alert sent
// before the FIN, so only the state counts.
func clientGone(d *Downstream) bool { return clientState(d, false) }

// clientReset reports whether the client's connection was reset (TCP_INFO
// state CLOSE): the client is gone whatever it had sent.
func clientReset(d *Downstream) bool { return clientState(d, true) }

func clientState(d *Downstream, resetOnly bool) bool {
	sc, plain := clientSocket(d)
	if sc == nil {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		if resetOnly {
			gone = info.State == unix.BPF_TCP_CLOSE
			return
		}
		if info.State != unix.BPF_TCP_CLOSE_WAIT && info.State != unix.BPF_TCP_CLOSE {
			return
		}
		if plain {
			if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err != nil || n > 0 {
				return
			}
		}
		gone = true
	})
	return gone
}

// clientSocket finds the TCP socket under d.Conn, and tells whether the
// connection is plain (its socket's bytes are HTTP).
func clientSocket(d *Downstream) (syscall.Conn, bool) {
	if d == nil {
		return nil, false
	}
	if d.Socket != nil {
		return d.Socket, !d.TLS
	}
	if d.TCP != nil {
		return d.TCP, !d.TLS
	}
	c := d.Conn
	for range 4 { // TLS over a wrapped socket: unwrap a few layers
		if sc, ok := c.(syscall.Conn); ok {
			return sc, !d.TLS
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = u.NetConn()
	}
	return nil, false
}
