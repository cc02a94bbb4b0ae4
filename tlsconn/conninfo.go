package tlsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
)

// Mode selects kernel TLS offload. The zero value is ModeAuto.
type Mode uint8

const (
	// ModeAuto offloads when the kernel and the negotiated cipher allow
	// it and keeps crypto/tls in user space otherwise, per connection.
	ModeAuto Mode = iota
	// ModeOff never offloads; connections stay in user space (a
	// *RecordConn or a *CryptoConn, see ServerConfig.CryptoTLSRecords).
	ModeOff
	// ModeRequire fails a connection that cannot be offloaded (after a
	// successful handshake) instead of falling back.
	ModeRequire
)

var modeNames = [...]string{"auto", "off", "require"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "unknown"
}

// ParseMode reads "auto", "off" or "require" (for flags and config files).
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return ModeAuto, errors.New("tlsconn: kernel TLS mode must be auto, off or require")
}

// Fallback says why a connection stayed in user space; FallbackNone means
// it was offloaded.
type Fallback uint8

const (
	FallbackNone      Fallback = iota // offloaded to the kernel
	FallbackOff                       // Mode is ModeOff
	FallbackNoKernel                  // not Linux, or no tls module (TCP_ULP: ENOENT)
	FallbackCipher                    // version/cipher not offloadable, or the kernel refused the keys
	FallbackNoSecrets                 // secrets or sequence numbers not capturable (e.g. TLS 1.2 resumption)
)

var fallbackNames = [...]string{
	"offloaded", "offload off", "no kernel TLS",
	"version or cipher not offloadable", "traffic secrets not available",
}

func (f Fallback) String() string {
	if int(f) < len(fallbackNames) {
		return fallbackNames[f]
	}
	return "unknown"
}

// Path says which record layer carries a connection's application data.
type Path uint8

const (
	PathCryptoTLS Path = iota // crypto/tls in user space: a *CryptoConn (see CryptoTLSReason)
	PathKernel                // kernel TLS both ways: a *Conn
	PathRecords               // Serval's user-space record layer: a *RecordConn
)

var pathNames = [...]string{"crypto-tls", "offloaded", "userspace-records"}

func (p Path) String() string {
	if int(p) < len(pathNames) {
		return pathNames[p]
	}
	return "unknown"
}

// CryptoTLSReason says why a connection that was not offloaded kept
// crypto/tls's record layer instead of a RecordConn.
type CryptoTLSReason uint8

const (
	CryptoTLSNone      CryptoTLSReason = iota // not on crypto/tls (offloaded or RecordConn)
	CryptoTLSOff                              // ServerConfig.CryptoTLSRecords is set
	CryptoTLSCipher                           // version or suite the record layer cannot take (none that Server negotiates)
	CryptoTLSNoSecrets                        // keys or sequence numbers not capturable (e.g. TLS 1.2 resumption)
	CryptoTLSClient                           // origination: crypto/tls keeps processing session tickets
)

var cryptoTLSNames = [...]string{"", "record layer off", "cipher not supported by the record layer",
	"traffic secrets not available", "client side"}

func (r CryptoTLSReason) String() string {
	if int(r) < len(cryptoTLSNames) {
		return cryptoTLSNames[r]
	}
	return "unknown"
}

// ErrOffloadRequired is returned (wrapped) by Handshake under ModeRequire
// when the connection could not be offloaded.
var ErrOffloadRequired = errors.New("tlsconn: kernel TLS required but not possible for this connection")

// ConnInfo describes an established connection. It is computed once per
// connection, at the end of Handshake; reading it later never allocates.
type ConnInfo struct {
	Version     uint16 // tls.VersionTLS12 or tls.VersionTLS13
	CipherSuite uint16
	Offloaded   bool     // kernel TLS both ways
	Fallback    Fallback // why not offloaded (FallbackNone when Offloaded)
	// Path is the record layer in use; CryptoTLSReason says why a
	// connection that was not offloaded is on crypto/tls (PathCryptoTLS).
	Path            Path
	CryptoTLSReason CryptoTLSReason
	ServerName      string // SNI the client sent (server side) or we sent (client side)
	ALPN            string // negotiated protocol; "" if none. Dispatch h2 here later.
	DidResume       bool
	Peer            PeerIdentity
}

// PeerIdentity is the peer's leaf certificate identity: on a server with
// ClientCAFile, the verified client; on a client, the server. Fields alias
// the parsed certificate and must not be modified.
type PeerIdentity struct {
	// Verified is true when the chain was verified against our roots.
	Verified       bool
	Subject        string // RFC 2253 form of the leaf's subject
	CommonName     string
	DNSNames       []string
	EmailAddresses []string
	URIs           []string // e.g. SPIFFE IDs
	IPAddresses    []net.IP
	Leaf           *x509.Certificate
}

// Identity extracts the peer identity from a connection state. Call it
// once per connection (Handshake does) and keep the result: it formats
// the subject and the URIs.
func Identity(cs *tls.ConnectionState) PeerIdentity {
	if len(cs.PeerCertificates) == 0 {
		return PeerIdentity{}
	}
	leaf := cs.PeerCertificates[0]
	id := PeerIdentity{
		Verified:       len(cs.VerifiedChains) > 0,
		Subject:        leaf.Subject.String(),
		CommonName:     leaf.Subject.CommonName,
		DNSNames:       leaf.DNSNames,
		EmailAddresses: leaf.EmailAddresses,
		IPAddresses:    leaf.IPAddresses,
		Leaf:           leaf,
	}
	if len(leaf.URIs) > 0 {
		id.URIs = make([]string, len(leaf.URIs))
		for i, u := range leaf.URIs {
			id.URIs[i] = u.String()
		}
	}
	return id
}

func newConnInfo(cs *tls.ConnectionState) ConnInfo {
	return ConnInfo{
		Version:     cs.Version,
		CipherSuite: cs.CipherSuite,
		ServerName:  cs.ServerName,
		ALPN:        cs.NegotiatedProtocol,
		DidResume:   cs.DidResume,
		Peer:        Identity(cs),
	}
}
