//go:build !linux

package sockio

import "net"

// Conn is a *net.TCPConn; elsewhere than Linux its Read and Write are
// the TCPConn's own.
type Conn struct {
	*net.TCPConn
}

// Init does nothing here.
func (c *Conn) Init() {}

// Reset makes c use tcp.
func (c *Conn) Reset(tcp *net.TCPConn) error {
	c.TCPConn = tcp
	return nil
}

// Clear drops the socket.
func (c *Conn) Clear() { c.TCPConn = nil }
