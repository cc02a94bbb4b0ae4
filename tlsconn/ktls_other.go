//go:build !linux

package tlsconn

import (
	"errors"
	"net"
)

// kernelTLSBuilt: kernel TLS is Linux-only; elsewhere every connection
// stays in crypto/tls (FallbackNoKernel) and ModeRequire fails.
const kernelTLSBuilt = false

var errNoKernelTLS = errors.New("tlsconn: kernel TLS is Linux-only")

// connPlatform is empty: no Conn is ever made on this OS.
type connPlatform struct{}

func enableKTLS(raw *net.TCPConn, tx, rx *trafficKeys) (*Conn, Fallback, error) {
	return nil, FallbackNoKernel, nil
}

// Read is never reached: Handshake returns a *tls.Conn on this OS.
func (c *Conn) Read(b []byte) (int, error) { return 0, errNoKernelTLS }

func (c *Conn) sendCloseNotify() error { return errNoKernelTLS }

// Probe reports that kernel TLS is not available on this OS.
func Probe() (ok bool, reason string) {
	return false, "tlsconn: no kernel TLS (Linux-only)"
}

func probe() error { return errNoKernelTLS }
