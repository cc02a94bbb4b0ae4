package tlsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
)

// Stats is a snapshot of one Server's or Client's counters.
type Stats struct {
	HandshakesOK uint64
	// Failed handshakes by reason.
	FailedTimeout       uint64 // handshake timeout or context done
	FailedVersionCipher uint64 // no common version or cipher suite (e.g. TLS 1.0 client)
	FailedBadCert       uint64 // the peer rejected our certificate, or (client side) we rejected the server's
	FailedClientCert    uint64 // mTLS: client certificate missing or invalid
	FailedNotTLS        uint64 // the first bytes were not a TLS record (plaintext HTTP on the TLS port)
	FailedOther         uint64
	// Which path each successful connection took.
	Offloaded uint64 // kernel TLS both ways
	Userspace uint64 // crypto/tls in user space
	// Why connections stayed in user space (sums to Userspace).
	FallbackOff       uint64 // Mode is ModeOff
	FallbackNoKernel  uint64 // no kernel TLS: not Linux, or no tls module (TCP_ULP: ENOENT)
	FallbackCipher    uint64 // version or cipher suite the kernel cannot take, or refused
	FallbackNoSecrets uint64 // key material or sequence numbers could not be captured
}

// counters are the live atomics behind Stats.
type counters struct {
	ok, timeout, versionCipher, badCert, clientCert, notTLS, other atomic.Uint64
	offloaded, userspace                                           atomic.Uint64
	fbOff, fbNoKernel, fbCipher, fbNoSecrets                       atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{
		HandshakesOK: c.ok.Load(), FailedTimeout: c.timeout.Load(),
		FailedVersionCipher: c.versionCipher.Load(), FailedBadCert: c.badCert.Load(),
		FailedClientCert: c.clientCert.Load(), FailedNotTLS: c.notTLS.Load(),
		FailedOther: c.other.Load(), Offloaded: c.offloaded.Load(),
		Userspace: c.userspace.Load(), FallbackOff: c.fbOff.Load(),
		FallbackNoKernel: c.fbNoKernel.Load(), FallbackCipher: c.fbCipher.Load(),
		FallbackNoSecrets: c.fbNoSecrets.Load(),
	}
}

// countPath records the path a connection took.
func (c *counters) countPath(f Fallback) {
	switch f {
	case FallbackNone:
		c.offloaded.Add(1)
		return
	case FallbackOff:
		c.fbOff.Add(1)
	case FallbackNoKernel:
		c.fbNoKernel.Add(1)
	case FallbackCipher:
		c.fbCipher.Add(1)
	default:
		c.fbNoSecrets.Add(1)
	}
	c.userspace.Add(1)
}

// countFailure classifies a handshake error into the fixed reason set.
// Error path only: string matching on crypto/tls messages is acceptable
// here because crypto/tls exports no error values for these cases.
func (c *counters) countFailure(err error, server bool) {
	var (
		rhe tls.RecordHeaderError
		cve *tls.CertificateVerificationError
		ue  x509.UnknownAuthorityError
		he  x509.HostnameError
		ne  net.Error
	)
	msg := err.Error()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled), errors.As(err, &ne) && ne.Timeout():
		c.timeout.Add(1)
	case errors.As(err, &rhe):
		c.notTLS.Add(1)
	case server && (errors.As(err, &cve) || strings.Contains(msg, "client didn't provide a certificate") ||
		strings.Contains(msg, "client certificate")):
		c.clientCert.Add(1)
	case errors.As(err, &cve), errors.As(err, &ue), errors.As(err, &he),
		strings.Contains(msg, "certificate"), strings.Contains(msg, "unknown authority"):
		c.badCert.Add(1)
	case strings.Contains(msg, "version"), strings.Contains(msg, "cipher suite"),
		strings.Contains(msg, "handshake failure"), strings.Contains(msg, "insufficient security"):
		c.versionCipher.Add(1)
	default:
		c.other.Add(1)
	}
}
