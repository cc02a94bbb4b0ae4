package tlsconn

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// HandshakeTimeoutDefault bounds a handshake when the config says 0:
	// long enough for a slow mobile client, short enough that a slowloris
	// holding connection slots in the handshake is cut off.
	HandshakeTimeoutDefault = 10 * time.Second
	// CertsMax bounds the certificates one Server holds (SNI table).
	CertsMax = 1024
	// ALPNHTTP11 is the protocol advertised by default.
	ALPNHTTP11 = "http/1.1"
)

// CertPair names a PEM certificate chain and its private key.
type CertPair struct {
	CertFile string
	KeyFile  string
}

// ServerConfig configures TLS termination.
type ServerConfig struct {
	// CertFile and KeyFile are the default certificate: used when the
	// client sends no SNI or a name no certificate covers. Optional if
	// Certs is not empty (then Certs[0] is the default).
	CertFile, KeyFile string
	// Certs are more certificates, chosen by SNI against each leaf's DNS
	// SANs: exact names first, then wildcards ("*.example.com" covers
	// "a.example.com", not "example.com" nor "a.b.example.com").
	Certs []CertPair
	// ClientCAFile, if set, turns on mTLS: clients must present a
	// certificate that verifies against these PEM roots.
	ClientCAFile string
	// MinVersion is the lowest TLS version accepted. 0 means TLS 1.2;
	// below TLS 1.2 is rejected.
	MinVersion uint16
	// HandshakeTimeout bounds each handshake. 0 means
	// HandshakeTimeoutDefault.
	HandshakeTimeout time.Duration
	// ALPN lists the protocols to advertise, in preference order. Empty
	// means just "http/1.1". ConnInfo.ALPN is the dispatch point.
	ALPN []string
	// Mode selects kernel TLS offload (zero value: ModeAuto).
	Mode Mode
	// CryptoTLSRecords keeps crypto/tls's record layer (a *CryptoConn) for
	// connections the kernel does not take. Zero value (false): such a
	// connection moves, after the crypto/tls handshake, to Serval's
	// user-space record layer (a *RecordConn: AES-GCM and
	// ChaCha20-Poly1305, TLS 1.2 and 1.3, no allocation per Read or
	// Write, KeyUpdate honoured), whatever Mode says; resumed TLS 1.2
	// sessions and anything else it cannot take stay on crypto/tls
	// (ConnInfo and Stats say why). Set it to compare the two or as a
	// kill switch.
	CryptoTLSRecords bool
	// SessionTicketSeed, when set (at least SessionTicketSeedBytes),
	// makes the session ticket keys a function of it and of the clock
	// instead of random per Server: every Server given the same seed
	// issues and accepts the same tickets, so a client resumes its
	// session whichever of several processes it reaches (lb --workers).
	// A new key starts every TicketKeyRotation; tickets sealed with the
	// last TicketKeysKept keys are accepted. Keep the seed as secret as
	// the private key: it opens every session resumed with it.
	SessionTicketSeed []byte
}

// Session ticket keys from a seed (ServerConfig.SessionTicketSeed), as
// crypto/tls rotates its own random ones: a new key each day, the last
// week's accepted (Go caps a ticket's lifetime at 7 days anyway).
const (
	SessionTicketSeedBytes = 32
	TicketKeyRotation      = 24 * time.Hour
	TicketKeysKept         = 8
)

// tls12Suites are the only TLS 1.2 suites: ECDHE for forward secrecy,
// AEAD only, and every one of them offloadable to the kernel. (TLS 1.3
// suites are not configurable in crypto/tls and are all AEAD.)
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Server terminates TLS. It is safe for concurrent use; Reload may run
// at any time.
type Server struct {
	cfg  ServerConfig // as given, with defaults applied; read by Reload
	base *tls.Config  // fixed: picks the current snapshot per handshake
	snap atomic.Pointer[serverSnapshot]
	ep   endpoint
	ctr  counters

	reloadMu sync.Mutex // one Reload at a time

	// Seeded session ticket keys: the rotation period the keys set on
	// base belong to (-1: none yet), and the clock (tests move it).
	ticketMu    sync.Mutex
	ticketEpoch atomic.Int64
	now         func() time.Time
}

// serverSnapshot is everything a Reload replaces, immutable once stored.
type serverSnapshot struct {
	cfg      *tls.Config
	certs    []*tls.Certificate // in configuration order
	def      *tls.Certificate
	exact    map[string]*tls.Certificate // lower-case DNS name
	wildcard map[string]*tls.Certificate // "example.com" for "*.example.com"
}

// NewServer validates cfg, loads the files and builds the TLS config.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.MinVersion != tls.VersionTLS12 && cfg.MinVersion != tls.VersionTLS13 {
		return nil, errors.New("tlsconn: MinVersion must be TLS 1.2 or TLS 1.3")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = HandshakeTimeoutDefault
	}
	if cfg.HandshakeTimeout < 0 {
		return nil, errors.New("tlsconn: HandshakeTimeout must not be negative")
	}
	if len(cfg.ALPN) == 0 {
		cfg.ALPN = []string{ALPNHTTP11}
	}
	if cfg.Mode > ModeRequire {
		return nil, errors.New("tlsconn: unknown Mode")
	}
	if n := len(cfg.SessionTicketSeed); n > 0 && n < SessionTicketSeedBytes {
		return nil, fmt.Errorf("tlsconn: SessionTicketSeed has %d bytes, fewer than %d", n, SessionTicketSeedBytes)
	}
	cfg.SessionTicketSeed = slices.Clone(cfg.SessionTicketSeed)
	s := &Server{cfg: cfg, now: time.Now}
	s.ticketEpoch.Store(-1)
	s.ep = endpoint{server: true, mode: cfg.Mode, timeout: cfg.HandshakeTimeout, ctr: &s.ctr}
	if cfg.CryptoTLSRecords {
		s.ep.cryptoTLS = CryptoTLSOff
	}
	// The base config is what tls.Server sees. It owns the session
	// ticket keys (so tickets survive reloads) and defers everything
	// else to the current snapshot through GetConfigForClient.
	s.base = &tls.Config{MinVersion: cfg.MinVersion, GetConfigForClient: s.configForClient}
	s.rotateTicketKeys()
	snap, err := loadSnapshot(&s.cfg)
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	return s, nil
}

// Reload re-reads the certificate, key and CA files. On any error the
// current certificates stay in use and the error says which file failed.
// New handshakes use the new certificates; established connections are
// untouched.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	snap, err := loadSnapshot(&s.cfg)
	if err != nil {
		return fmt.Errorf("tlsconn: reload rejected, keeping current certificates: %w", err)
	}
	s.snap.Store(snap)
	return nil
}

// CertInfo describes a loaded certificate, for logs.
type CertInfo struct {
	File       string // its PEM file
	CommonName string
	DNSNames   []string
	IPs        []net.IP // IP address SANs
	NotBefore  time.Time
	NotAfter   time.Time
}

// Certificates describes the certificates in use (after the latest
// successful load or reload), in configuration order.
func (s *Server) Certificates() []CertInfo {
	snap := s.snap.Load()
	pairs := s.cfg.Certs
	if s.cfg.CertFile != "" {
		pairs = append([]CertPair{{s.cfg.CertFile, s.cfg.KeyFile}}, s.cfg.Certs...)
	}
	out := make([]CertInfo, 0, len(snap.certs))
	for i, c := range snap.certs {
		ci := CertInfo{CommonName: c.Leaf.Subject.CommonName, DNSNames: c.Leaf.DNSNames, IPs: c.Leaf.IPAddresses,
			NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter}
		if i < len(pairs) {
			ci.File = pairs[i].CertFile
		}
		out = append(out, ci)
	}
	return out
}

// TLSConfig returns a config for callers that run crypto/tls themselves
// (no offload, no counters). It follows reloads.
func (s *Server) TLSConfig() *tls.Config { return s.base }

// Stats returns the counters.
func (s *Server) Stats() Stats { return s.ctr.stats() }

// HandshakeTimeout is the bound on each handshake (the configured one, or
// HandshakeTimeoutDefault).
func (s *Server) HandshakeTimeout() time.Duration { return s.ep.timeout }

// Handshake runs the server handshake on raw, bounded by the handshake
// timeout and ctx. It returns the connection to use: a *Conn (kernel TLS;
// tcp is raw, usable for splice, see Conn), else a *RecordConn (Serval's
// user-space records) or a *CryptoConn (crypto/tls); in user space tcp is
// nil. info.Path says which. On error the caller closes raw; crypto/tls
// has written its alert by then, and the client may have sent bytes the
// handshake never read (a TLS 1.3 client its request, before the server
// checked its certificate): closing over them resets the connection, and
// the client may report the reset instead of the alert, so shut the
// writing side and discard input for a bounded time first (as server
// does).
func (s *Server) Handshake(ctx context.Context, raw *net.TCPConn) (conn net.Conn, tcp *net.TCPConn, info ConnInfo, err error) {
	if !s.ep.wantsHandshakeConn() {
		return s.ep.run(ctx, raw, raw, tls.Server(raw, s.base), nil)
	}
	rc := newHandshakeConn(raw)
	rc.ticketCfg = s.base
	return s.ep.run(ctx, raw, raw, tls.Server(rc, s.base), rc)
}

// configForClient picks the current snapshot. When the connection may be
// offloaded or moved to a RecordConn it returns a per-connection clone whose KeyLogWriter and
// WrapSession feed that connection's handshakeConn: one allocation per
// connection, none per request, and no shared map to race on.
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	s.rotateTicketKeys()
	snap := s.snap.Load()
	rc, ok := hello.Conn.(*handshakeConn)
	if !ok {
		return snap.cfg, nil
	}
	c := snap.cfg.Clone()
	c.KeyLogWriter = keyLogWriter{rc}
	c.WrapSession = rc.wrapSession
	return c, nil
}

// rotateTicketKeys sets the session ticket keys of the current rotation
// period on base, once per period, when the keys come from a seed. Every
// handshake calls it: the common case is one clock read and a compare.
// Tickets are sealed with the base config's keys (the snapshots carry
// none), whichever config a handshake ends up using.
func (s *Server) rotateTicketKeys() {
	if len(s.cfg.SessionTicketSeed) == 0 {
		return
	}
	epoch := s.now().Unix() / int64(TicketKeyRotation/time.Second)
	if s.ticketEpoch.Load() == epoch {
		return
	}
	s.ticketMu.Lock()
	defer s.ticketMu.Unlock()
	if s.ticketEpoch.Load() == epoch {
		return
	}
	s.base.SetSessionTicketKeys(ticketKeys(s.cfg.SessionTicketSeed, epoch))
	s.ticketEpoch.Store(epoch)
}

// ticketKeys derives the keys of rotation period epoch and of the
// TicketKeysKept-1 periods before it, newest first (it seals new
// tickets): HMAC-SHA256 of the period under the seed.
func ticketKeys(seed []byte, epoch int64) [][32]byte {
	keys := make([][32]byte, TicketKeysKept)
	for i := range keys {
		m := hmac.New(sha256.New, seed)
		m.Write([]byte("serval session ticket key v1"))
		m.Write(binary.BigEndian.AppendUint64(nil, uint64(epoch-int64(i))))
		m.Sum(keys[i][:0])
	}
	return keys
}

// loadSnapshot reads every file named in cfg.
func loadSnapshot(cfg *ServerConfig) (*serverSnapshot, error) {
	pairs := cfg.Certs
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		pairs = append([]CertPair{{cfg.CertFile, cfg.KeyFile}}, cfg.Certs...)
	}
	if len(pairs) == 0 {
		return nil, errors.New("tlsconn: no certificate configured (CertFile/KeyFile or Certs)")
	}
	if len(pairs) > CertsMax {
		return nil, fmt.Errorf("tlsconn: %d certificates, more than CertsMax (%d)", len(pairs), CertsMax)
	}
	snap := &serverSnapshot{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for i, p := range pairs {
		c, err := loadPair(p)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			snap.def = c
		}
		snap.certs = append(snap.certs, c)
		snap.index(c)
	}
	snap.cfg = &tls.Config{
		MinVersion:     cfg.MinVersion,
		CipherSuites:   tls12Suites,
		NextProtos:     cfg.ALPN,
		GetCertificate: snap.getCertificate,
	}
	if cfg.ClientCAFile != "" {
		pool, err := loadPool(cfg.ClientCAFile)
		if err != nil {
			return nil, err
		}
		snap.cfg.ClientCAs = pool
		snap.cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return snap, nil
}

func loadPair(p CertPair) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		if key, rerr := os.ReadFile(p.KeyFile); rerr == nil && (strings.Contains(string(key), "ENCRYPTED PRIVATE KEY") || strings.Contains(string(key), "Proc-Type: 4,ENCRYPTED")) {
			return nil, fmt.Errorf("tlsconn: key %s is encrypted (a passphrase-protected key cannot be loaded; decrypt it, e.g. openssl pkey -in key.pem -out plain.pem): %w", p.KeyFile, err)
		}
		return nil, fmt.Errorf("tlsconn: certificate %s / key %s: %w", p.CertFile, p.KeyFile, err)
	}
	if c.Leaf == nil { // Go fills Leaf unless GODEBUG x509keypairleaf=0
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsconn: certificate %s: %w", p.CertFile, err)
		}
	}
	return &c, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsconn: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsconn: CA file %s: no PEM certificates", file)
	}
	return pool, nil
}

// index adds c under each DNS SAN. The first certificate to claim a name
// keeps it, so earlier entries in the config win.
func (snap *serverSnapshot) index(c *tls.Certificate) {
	for _, name := range c.Leaf.DNSNames {
		name = strings.ToLower(name)
		m := snap.exact
		if rest, ok := strings.CutPrefix(name, "*."); ok {
			m, name = snap.wildcard, rest
		}
		if _, dup := m[name]; !dup {
			m[name] = c
		}
	}
}

// getCertificate selects by SNI: exact name, then the wildcard of its
// parent domain, then the default. DNS names compare case-insensitively;
// fold only when needed so the common lower-case SNI does not allocate.
func (snap *serverSnapshot) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := hello.ServerName
	if name == "" {
		return snap.def, nil
	}
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	name = strings.TrimSuffix(name, ".")
	if c, ok := snap.exact[name]; ok {
		return c, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := snap.wildcard[name[i+1:]]; ok {
			return c, nil
		}
	}
	return snap.def, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
