package tlsconn

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"
)

const (
	// SessionCacheSizeDefault is the per-upstream TLS session cache size
	// when ClientConfig.SessionCacheSize is 0: about one ticket per pooled
	// connection to one upstream.
	SessionCacheSizeDefault = 64
	// SessionCacheSizeMax bounds the cache (each entry holds a ticket and
	// the server's certificate chain).
	SessionCacheSizeMax = 4096
)

// ClientConfig configures TLS origination to one upstream.
type ClientConfig struct {
	// CAFile is a PEM file of roots to verify the upstream against.
	// Empty: the system roots.
	CAFile string
	// ServerName, if set, is sent as SNI and verified against the
	// upstream's certificate instead of the upstream's host.
	ServerName string
	// InsecureSkipVerify turns off certificate verification. Dangerous:
	// see Client.Warning, which the caller should log at startup.
	InsecureSkipVerify bool
	// SessionCacheSize is the number of TLS sessions kept for resumption.
	// 0 means SessionCacheSizeDefault; negative disables resumption.
	SessionCacheSize int
	// MinVersion is the lowest TLS version offered. 0 means TLS 1.2.
	MinVersion uint16
	// HandshakeTimeout bounds each handshake; 0 means
	// HandshakeTimeoutDefault.
	HandshakeTimeout time.Duration
	// ALPN lists protocols to offer; empty means "http/1.1".
	ALPN []string
	// Mode selects kernel TLS offload (zero value: ModeAuto). Note that
	// an offloaded TLS 1.3 connection ignores the tickets that arrive
	// after the handshake, and a resumed TLS 1.2 connection stays in user
	// space (crypto/tls logs no master secret for it): resumption and
	// offload do not combine on the client side. See doc.go.
	Mode Mode
}

// Client originates TLS to one upstream. Create one per upstream (the
// session cache is shared by that upstream's pooled connections) and use
// it concurrently.
type Client struct {
	cfg     *tls.Config
	mode    Mode
	ep      endpoint
	ctr     counters
	warning string
}

// NewClient builds the client side for an upstream whose host (a DNS name
// or IP literal, without port or brackets) is host.
//
// SNI and verification: the explicit ServerName if set, else host. Go
// sends no SNI for an IP literal and verifies it against the
// certificate's IP SANs, which is what RFC 6066 §3 asks.
func NewClient(cfg ClientConfig, host string) (*Client, error) {
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.MinVersion != tls.VersionTLS12 && cfg.MinVersion != tls.VersionTLS13 {
		return nil, errors.New("tlsconn: MinVersion must be TLS 1.2 or TLS 1.3")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = HandshakeTimeoutDefault
	}
	if cfg.HandshakeTimeout < 0 || cfg.SessionCacheSize > SessionCacheSizeMax || cfg.Mode > ModeRequire {
		return nil, errors.New("tlsconn: ClientConfig: negative HandshakeTimeout, SessionCacheSize above SessionCacheSizeMax, or unknown Mode")
	}
	name := cfg.ServerName
	if name == "" {
		name = host
	}
	if name == "" && !cfg.InsecureSkipVerify {
		return nil, errors.New("tlsconn: no host or ServerName to verify the upstream against")
	}
	if len(cfg.ALPN) == 0 {
		cfg.ALPN = []string{ALPNHTTP11}
	}
	c := &Client{mode: cfg.Mode}
	// Origination stays on crypto/tls when not offloaded: it must keep
	// reading the server's TLS 1.3 NewSessionTickets into the session
	// cache for resumption, which only crypto/tls can do.
	c.ep = endpoint{server: false, mode: cfg.Mode, timeout: cfg.HandshakeTimeout, ctr: &c.ctr,
		cryptoTLS: CryptoTLSClient}
	c.cfg = &tls.Config{
		ServerName:         name,
		MinVersion:         cfg.MinVersion,
		CipherSuites:       tls12Suites,
		NextProtos:         cfg.ALPN,
		InsecureSkipVerify: cfg.InsecureSkipVerify,
	}
	if cfg.CAFile != "" {
		pool, err := loadPool(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		c.cfg.RootCAs = pool
	}
	switch {
	case cfg.SessionCacheSize == 0:
		c.cfg.ClientSessionCache = tls.NewLRUClientSessionCache(SessionCacheSizeDefault)
	case cfg.SessionCacheSize > 0:
		c.cfg.ClientSessionCache = tls.NewLRUClientSessionCache(cfg.SessionCacheSize)
	}
	if cfg.InsecureSkipVerify {
		c.warning = "tlsconn: certificate verification is OFF for upstream " + name +
			" (InsecureSkipVerify): anyone on the path can impersonate it"
	}
	return c, nil
}

// Warning is non-empty when the configuration is insecure; log it.
func (c *Client) Warning() string { return c.warning }

// TLSConfig returns the per-upstream config for callers that run
// crypto/tls themselves. Do not modify it.
func (c *Client) TLSConfig() *tls.Config { return c.cfg }

// Stats returns the counters.
func (c *Client) Stats() Stats { return c.ctr.stats() }

// Handshake runs the client handshake on raw (already connected to the
// upstream). Results are as for Server.Handshake.
func (c *Client) Handshake(ctx context.Context, raw *net.TCPConn) (conn net.Conn, tcp *net.TCPConn, info ConnInfo, err error) {
	return c.HandshakeOver(ctx, raw, raw)
}

// HandshakeOver is Handshake with the connection's bytes read and written
// through transport, a wrapper of raw that does the socket's I/O its own
// way (the upstream dialer's readiness-polled connection); deadlines are
// set on it. raw still serves what only the socket can do (kernel TLS).
// When the kernel takes the records over (tcp is returned), they no
// longer go through transport. Closing a user-space connection closes
// transport.
func (c *Client) HandshakeOver(ctx context.Context, raw *net.TCPConn, transport net.Conn) (conn net.Conn, tcp *net.TCPConn, info ConnInfo, err error) {
	if !c.ep.wantsHandshakeConn() {
		return c.ep.run(ctx, raw, transport, tls.Client(transport, c.cfg), nil)
	}
	// A per-connection clone carries this connection's key log writer.
	rc := newHandshakeConn(transport)
	cfg := c.cfg.Clone()
	cfg.KeyLogWriter = keyLogWriter{rc}
	return c.ep.run(ctx, raw, transport, tls.Client(rc, cfg), rc)
}
