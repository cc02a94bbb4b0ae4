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

// AwaitReadable returns at once here: the caller reads without waiting
// for readiness first.
func (c *Conn) AwaitReadable() error { return nil }

// AwaitRead returns at once: the Read waits.
func (c *Conn) AwaitRead() error { return nil }

// ReadNow is Read (see the Linux version).
func (c *Conn) ReadNow(b []byte) (n int, ok bool, err error) {
	n, err = c.Read(b)
	return n, true, err
}

// Clear drops the socket.
func (c *Conn) Clear() { c.TCPConn = nil }

// WriteTwo writes a then b (see the Linux version).
func (c *Conn) WriteTwo(a, b []byte) (int, error) {
	n, err := c.Write(a)
	if err != nil {
		return n, err
	}
	m, err := c.Write(b)
	return n + m, err
}

// WriteRead writes w whole, then reads into r (see the Linux version).
func (c *Conn) WriteRead(w, r []byte) (n int, werr, rerr error) {
	if _, err := c.Write(w); err != nil {
		return 0, err, nil
	}
	n, err := c.Read(r)
	return n, nil, err
}
