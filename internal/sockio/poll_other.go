//go:build !linux

package sockio

// Hold does nothing here: there is no readiness poller.
func Hold() error { return nil }

// Unhold does nothing here.
func Unhold() {}

// Registered is 0 here: nothing is polled.
func Registered() int { return 0 }

// Poll does nothing here: reads go through net.
func (c *Conn) Poll() error { return nil }

// Unpoll does nothing: nothing is polled here.
func (c *Conn) Unpoll() {}

// Interrupt does nothing here; closing the socket wakes its reader.
func (c *Conn) Interrupt() {}

// ExpireRead does nothing here; a past read deadline on the socket
// wakes its reader.
func (c *Conn) ExpireRead() {}

// Quiet is false here: nothing is known without asking the kernel.
func (c *Conn) Quiet() bool { return false }

// Polling is false off Linux: Poll does nothing.
func Polling() bool { return false }

// PeerClosed is false off Linux: nothing watches the socket.
func (c *Conn) PeerClosed() bool { return false }

// PeerReset cannot ask the kernel here.
func (c *Conn) PeerReset() bool { return false }

// Pipe is unused here: SpliceTo is never called (nothing is polled).
type Pipe struct{}

// GetPipe returns an unused pipe.
func GetPipe() (*Pipe, error) { return &Pipe{}, nil }

// PutPipe does nothing.
func PutPipe(*Pipe) {}

// Polled is false here.
func (c *Conn) Polled() bool { return false }

// SpliceTo is never called here (Polled is false).
func (c *Conn) SpliceTo(dst *Conn, n int64, p *Pipe, progress func() error) (int64, error) {
	panic("sockio: SpliceTo without a poller")
}
