package client

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/sockio"
)

// KeepAlivePeriod is the TCP keepalive probe interval of dialled
// connections: idle pooled connections to a vanished upstream are found
// by the kernel instead of by the next request.
const KeepAlivePeriod = 15 * time.Second

// Dialer dials upstream connections. Its zero value is not usable: build
// one with NewDialer. Safe for concurrent use.
type Dialer struct {
	d       net.Dialer
	timeout time.Duration
	tls     tlsClients
}

// DialError is a failed dial. Status is 504 when the connect timeout ran
// out and 502 otherwise (refused, unreachable, reset).
type DialError struct {
	Status int
	Err    error
}

func (e *DialError) Error() string { return "client: dial: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// ErrNotTCP is returned when a dial yields something other than a TCP
// connection (it cannot happen with the "tcp" network; asserted anyway).
var ErrNotTCP = errors.New("client: dialled connection is not TCP")

// NewDialer returns a dialer whose connects give up after connectTimeout.
func NewDialer(connectTimeout time.Duration) *Dialer {
	if connectTimeout <= 0 {
		panic("client: connect timeout must be positive")
	}
	return &Dialer{timeout: connectTimeout, d: net.Dialer{
		Timeout: connectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     KeepAlivePeriod,
			Interval: KeepAlivePeriod,
			Count:    3,
		},
	}}
}

// Dial connects to up and returns the connection with Conn and TCP set.
// TCP_NODELAY is on (Go's default, set again to say we rely on it): heads
// and small bodies must leave at once. For an upstream with TLS set, the
// TLS handshake follows (see dialTLS); the connect timeout covers both.
func (d *Dialer) Dial(up *serval.Upstream) (*serval.UpstreamConn, error) {
	if up.TLS {
		return d.dialTLS(up)
	}
	tcp, err := d.dialTCP(context.Background(), up)
	if err != nil {
		return nil, err
	}
	// Reads and writes as raw system calls (internal/sockio): a dial
	// allocates the wrapper once; requests allocate nothing.
	sc := &sockio.Conn{}
	sc.Init()
	var conn net.Conn = tcp
	if sc.Reset(tcp) == nil {
		conn = sc
		// Wait for the response's readiness before reading it; a
		// failure leaves reads the runtime's way. Close unregisters.
		sc.Poll()
	}
	return &serval.UpstreamConn{
		Conn:     conn,
		TCP:      tcp,
		Socket:   tcp,
		Upstream: up.Index,
		Peer:     up,
		Created:  time.Now(),
	}, nil
}

// dialTCP connects to up within the dialer's timeout (and ctx).
func (d *Dialer) dialTCP(ctx context.Context, up *serval.Upstream) (*net.TCPConn, error) {
	c, err := d.d.DialContext(ctx, "tcp", up.Addr())
	if err != nil {
		status := 502
		if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
			status = 504
		}
		return nil, &DialError{Status: status, Err: err}
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, &DialError{Status: 502, Err: ErrNotTCP}
	}
	if err := tcp.SetNoDelay(true); err != nil {
		c.Close()
		return nil, &DialError{Status: 502, Err: err}
	}
	return tcp, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
