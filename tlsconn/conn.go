package tlsconn

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	// closeNotifyTimeout bounds the close_notify write in Close, as
	// crypto/tls does, so Close never blocks on a peer that stopped reading.
	closeNotifyTimeout = 5 * time.Second
	// controlRecordsPerReadMax is the budget of non-data records (tickets)
	// one Read skips before it gives up: every loop over network input has
	// a bound.
	controlRecordsPerReadMax = 16
	// ticketsMax bounds the TLS 1.3 NewSessionTicket messages a peer may
	// send over an offloaded connection. Servers send one or two.
	ticketsMax = 32
)

var (
	errKeyUpdate           = errors.New("tlsconn: peer sent KeyUpdate; kernel TLS here cannot rekey, closing")
	errUnexpectedHandshake = errors.New("tlsconn: unexpected post-handshake message on a kernel TLS connection")
	errUnexpectedRecord    = errors.New("tlsconn: unexpected TLS record type on a kernel TLS connection")
	errControlFlood        = errors.New("tlsconn: too many non-data TLS records")
)

// AlertError is a fatal TLS alert the peer sent on an offloaded
// connection (close_notify is io.EOF instead).
type AlertError uint8

func (a AlertError) Error() string { return "tlsconn: peer sent TLS alert " + strconv.Itoa(int(a)) }

// Conn is a connection whose records the kernel encrypts and decrypts
// (kernel TLS, both directions). Read and Write move plaintext with one
// syscall and no allocation; Close sends close_notify.
//
// Splice: TCP returns the socket. Writing to it (or ReadFrom, which
// splices or sendfiles into it) is always safe: the kernel frames
// whatever arrives as application-data records. Reading from it is safe
// for application data only: when the next record is a control record
// (a TLS 1.3 NewSessionTicket, an alert, close_notify) splice fails with
// EINVAL and a plain read(2) with EIO; on either, call Conn.Read, which
// consumes the control record (skipping tickets, turning close_notify
// into io.EOF), then resume splicing.
type Conn struct {
	tcp      *net.TCPConn
	notified atomic.Bool // close_notify sent
	closed   atomic.Bool
	p        connPlatform
}

// TCP returns the socket for splice; see Conn.
func (c *Conn) TCP() *net.TCPConn { return c.tcp }

// Write sends p as application data; the kernel splits it into records.
func (c *Conn) Write(p []byte) (int, error) { return c.tcp.Write(p) }

// ReadFrom lets io.Copy(conn, src) splice or sendfile into the kernel's
// TX path.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.tcp.ReadFrom(r) }

func (c *Conn) LocalAddr() net.Addr                { return c.tcp.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.tcp.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.tcp.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.tcp.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tcp.SetWriteDeadline(t) }

// CloseWrite sends close_notify and shuts down the sending side, for
// half-closed proxying. The socket's sending side is shut even when
// close_notify cannot go (a write deadline in the past, as a proxy sets
// to stop a body it no longer wants): the peer then reads a plain end of
// stream rather than waiting for one.
func (c *Conn) CloseWrite() error {
	var err error
	if c.notified.CompareAndSwap(false, true) {
		err = c.sendCloseNotify()
	}
	if cerr := c.tcp.CloseWrite(); err == nil {
		err = cerr
	}
	return err
}

// Close sends close_notify (bounded by closeNotifyTimeout) and closes the
// socket.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	if c.notified.CompareAndSwap(false, true) {
		_ = c.tcp.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
		_ = c.sendCloseNotify() // best effort, as crypto/tls
	}
	return c.tcp.Close()
}
