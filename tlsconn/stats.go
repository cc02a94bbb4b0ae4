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
	// Which user-space record layer (sums to Userspace).
	UserspaceRecords uint64 // Serval's zero-allocation record layer (RecordConn)
	CryptoTLS        uint64 // crypto/tls (*tls.Conn)
	// Why crypto/tls kept the records (sums to CryptoTLS).
	CryptoTLSOff       uint64 // ServerConfig.CryptoTLSRecords set
	CryptoTLSCipher    uint64 // version or suite RecordConn cannot take (none that Server negotiates)
	CryptoTLSNoSecrets uint64 // keys not capturable (e.g. TLS 1.2 resumption)
	CryptoTLSClient    uint64 // origination, always crypto/tls
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
	records, cryptoTLS                                             atomic.Uint64
	ctOff, ctCipher, ctNoSecrets, ctClient                         atomic.Uint64
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
		UserspaceRecords:  c.records.Load(), CryptoTLS: c.cryptoTLS.Load(),
		CryptoTLSOff: c.ctOff.Load(), CryptoTLSCipher: c.ctCipher.Load(),
		CryptoTLSNoSecrets: c.ctNoSecrets.Load(), CryptoTLSClient: c.ctClient.Load(),
	}
}

// countPath records the path a connection took.
func (c *counters) countPath(info *ConnInfo) {
	if info.Path == PathKernel {
		c.offloaded.Add(1)
		return
	}
	c.countRecords(info)
	switch info.Fallback {
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

// countRecords records which user-space record layer a connection uses.
func (c *counters) countRecords(info *ConnInfo) {
	if info.Path == PathRecords {
		c.records.Add(1)
		return
	}
	c.cryptoTLS.Add(1)
	switch info.CryptoTLSReason {
	case CryptoTLSOff:
		c.ctOff.Add(1)
	case CryptoTLSCipher:
		c.ctCipher.Add(1)
	case CryptoTLSClient:
		c.ctClient.Add(1)
	default:
		c.ctNoSecrets.Add(1)
	}
}
