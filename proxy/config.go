package proxy

import (
	"errors"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/slab"
	"github.com/servalproxy/serval/tlsconn"
)

// Defaults for the Config fields that have no serval.*Default constant.
const (
	// FieldsMaxDefault bounds the fields of an upstream response head
	// (and of a request forwarded). Responses carry more than requests
	// (a Set-Cookie per cookie, security and caching fields); nginx
	// bounds them only by its 4-8 KiB header buffer, HAProxy at 101.
	FieldsMaxDefault = 256
	// BufferBytesDefault: a response head of HeadBytesMaxDefault and a
	// 64 KiB body read with it (copied, not spliced: see BufferBytes),
	// with room to spare. Memory is touched only as far as responses
	// fill it.
	BufferBytesDefault = 128 << 10
	// BufferBytesMax bounds Config.BufferBytes; a session owns up to
	// three buffers of this size (the second and third only once a
	// request body or a body hook needs them).
	BufferBytesMax = 16 << 20
	// RequestBodyBytesMaxDefault: 1 GiB, as the server's default.
	RequestBodyBytesMaxDefault = 1 << 30
	// TunnelIdleTimeoutDefault: ten minutes without a byte either way
	// ends an upgraded connection (WebSocket peers ping far more often).
	TunnelIdleTimeoutDefault = 10 * time.Minute
	// RetriesMaxDefault: one OnError-requested retry elsewhere.
	RetriesMaxDefault = 1
	// RetriesMaxLimit bounds RetriesMax: each retry holds the client.
	RetriesMaxLimit = 8
	// ViaBytesMax bounds the Via pseudonym.
	ViaBytesMax = 64
	// ClientCertBytesMax bounds the value ClientCertHeader adds for one
	// client certificate: the hash and subject, then as many names as fit.
	ClientCertBytesMax = 4 << 10
	// fieldNameBytesMax bounds a configured field name (ClientCertHeader).
	fieldNameBytesMax = 64
	// TimeoutMax bounds every timeout field.
	TimeoutMax = 24 * time.Hour
)

// Config configures forwarding. Zero fields take defaults in New.
type Config struct {
	// ConnectTimeout bounds dialling an upstream (504 when it runs out).
	// Default serval.UpstreamConnectTimeoutDefault.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the upstream's response head
	// after the request was wholly sent, body included (504), and each
	// read stall of the response body. While a streamed request body is
	// still going up, BodyReadTimeout bounds the client's stalls and
	// WriteTimeout the upstream's. Default
	// serval.UpstreamResponseTimeoutDefault.
	ResponseTimeout time.Duration
	// BodyReadTimeout bounds each stall reading the client's request body.
	// Default serval.BodyReadTimeoutDefault.
	BodyReadTimeout time.Duration
	// WriteTimeout bounds each stall writing to the client or upstream.
	// Default serval.WriteTimeoutDefault.
	WriteTimeout time.Duration
	// TrustForwarded keeps incoming X-Forwarded-* fields (appending to
	// X-Forwarded-For); false (default) replaces them.
	TrustForwarded bool
	// Via, when non-empty, is the pseudonym added as "Via: 1.1 <Via>" to
	// requests (appended to an existing Via) and responses (a Via field
	// line after the upstream's). At most ViaBytesMax bytes.
	Via string
	// ClientCertHeader, when non-empty (e.g. "X-Forwarded-Client-Cert"),
	// names the field that tells upstreams which client certificate a
	// request came with (mTLS): for a client whose certificate verified
	// against the server's client CAs, one element in Envoy's XFCC syntax,
	// Hash=<hex SHA-256 of the leaf's DER>;Subject="<RFC 2253 subject>",
	// then URI=<uri> for each URI name (a SPIFFE ID) and DNS=<name> for
	// each DNS name, as many as fit ClientCertBytesMax (a value with a
	// control character is left out). A field of this name (or its
	// underscore spelling) sent by the client is removed, so a backend can
	// trust what it sees; with TrustForwarded it is kept and ours is
	// appended to the list. Requests without a verified certificate carry
	// none (or only the trusted incoming one).
	ClientCertHeader string
	// HeadBytesMax, FieldsMax bound the upstream response head. Defaults
	// serval.HeadBytesMaxDefault and FieldsMaxDefault (256). A response
	// over either is answered 502 and is not held against the upstream's
	// health (UpstreamResult.Failure is false). FieldsMax also bounds the
	// request fields forwarded: a request with more (a server that
	// accepts more than this) is refused with 431, never forwarded short
	// of a field.
	HeadBytesMax int
	FieldsMax    int
	// TrailerBytesMax bounds chunked trailers both ways. Default
	// serval.TrailerBytesMaxDefault.
	TrailerBytesMax int
	// BufferBytes is the size of an upstream read buffer (response
	// heads and bodies; one per session, lent to an exchange only once
	// its answer is there, see readbufs.go) and of a request body pump's
	// buffer (lent per upload), >= HeadBytesMax. A Content-Length body
	// (either way) whose rest fits it is copied through it; a larger one
	// is spliced socket to socket where both sockets allow. Splice lends the sender's
	// pages to the receiving socket until its reader takes them, which on
	// loopback (a sidecar, a local origin) costs both peers more than it
	// saves for bodies of this size. Default BufferBytesDefault (or
	// HeadBytesMax when larger).
	BufferBytes int
	// RequestBodyBytesMax bounds a proxied request body (413 above it).
	// Default RequestBodyBytesMaxDefault.
	RequestBodyBytesMax int64
	// UpstreamTLS configures TLS origination to every upstream with
	// Upstream.TLS set: verification (on unless InsecureSkipVerify; the
	// system roots unless CAFile), minimum version, session resumption,
	// kernel TLS mode. Upstream.ServerName overrides its ServerName per
	// upstream. The zero value verifies against the system roots with the
	// upstream's host name. ConnectTimeout covers TCP connect and the
	// handshake (504 when it runs out); a failed verification is a 502.
	UpstreamTLS tlsconn.ClientConfig
	// TunnelIdleTimeout ends a protocol upgrade's tunnel (WebSocket, after
	// 101 Switching Protocols) when no byte went either way for this long.
	// Default TunnelIdleTimeoutDefault.
	TunnelIdleTimeout time.Duration
	// UpgradesOff strips Upgrade from requests (as every hop-by-hop
	// field) instead of proxying protocol upgrades.
	UpgradesOff bool
	// RetriesMax bounds OnError-requested retries on another upstream.
	// Zero means RetriesMaxDefault; negative means none.
	RetriesMax int
	// ClientCheckInterval is how often an exchange that has waited this
	// long for its response head checks that its client is still
	// connected; when it is not, the upstream connection is closed and
	// nothing is answered (status 499 in logs; see watch.go). It needs
	// WatchClients running (a server runs it). Zero means
	// ClientCheckIntervalDefault; negative means never (the response is
	// awaited, and dropped when writing it fails).
	ClientCheckInterval time.Duration
	// Logger receives forwarding errors; nil means slog.Default().
	Logger *slog.Logger
}

// withDefaults fills zero fields and checks bounds.
func (c Config) withDefaults() (Config, error) {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.ConnectTimeout, serval.UpstreamConnectTimeoutDefault)
	def(&c.ResponseTimeout, serval.UpstreamResponseTimeoutDefault)
	def(&c.BodyReadTimeout, serval.BodyReadTimeoutDefault)
	def(&c.WriteTimeout, serval.WriteTimeoutDefault)
	def(&c.TunnelIdleTimeout, TunnelIdleTimeoutDefault)
	def(&c.ClientCheckInterval, ClientCheckIntervalDefault)
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.HeadBytesMax, serval.HeadBytesMaxDefault)
	defInt(&c.FieldsMax, FieldsMaxDefault)
	defInt(&c.TrailerBytesMax, serval.TrailerBytesMaxDefault)
	defInt(&c.BufferBytes, max(BufferBytesDefault, c.HeadBytesMax))
	if c.RequestBodyBytesMax == 0 {
		c.RequestBodyBytesMax = RequestBodyBytesMaxDefault
	}
	if c.RetriesMax == 0 {
		c.RetriesMax = RetriesMaxDefault
	} else if c.RetriesMax < 0 {
		c.RetriesMax = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	// Validate the TLS defaults now (a bad CA file fails New, not the
	// first dial); the per-upstream clients are built from them later.
	if _, err := tlsconn.NewClient(c.UpstreamTLS, "config.check.invalid"); err != nil {
		return c, &serval.ConfigError{Field: "proxy.UpstreamTLS", Msg: err.Error()}
	}
	for _, b := range []struct {
		name      string
		v, lo, hi time.Duration
	}{
		{"ConnectTimeout", c.ConnectTimeout, time.Millisecond, TimeoutMax},
		{"ResponseTimeout", c.ResponseTimeout, time.Millisecond, TimeoutMax},
		{"BodyReadTimeout", c.BodyReadTimeout, time.Millisecond, TimeoutMax},
		{"WriteTimeout", c.WriteTimeout, time.Millisecond, TimeoutMax},
		{"TunnelIdleTimeout", c.TunnelIdleTimeout, time.Millisecond, TimeoutMax},
		{"ClientCheckInterval", max(c.ClientCheckInterval, time.Millisecond), time.Millisecond, TimeoutMax},
	} {
		if b.v < b.lo || b.v > b.hi {
			return c, &serval.ConfigError{Field: "proxy." + b.name, Msg: b.v.String() + " not in [" + b.lo.String() + ", " + b.hi.String() + "]"}
		}
	}
	type bound struct {
		name      string
		v, lo, hi int64
	}
	for _, b := range []bound{
		{"HeadBytesMax", int64(c.HeadBytesMax), 256, serval.HeadBytesMaxLimit},
		{"FieldsMax", int64(c.FieldsMax), 1, serval.FieldsMaxLimit},
		{"TrailerBytesMax", int64(c.TrailerBytesMax), 2, serval.HeadBytesMaxLimit},
		{"BufferBytes", int64(c.BufferBytes), int64(c.HeadBytesMax), BufferBytesMax},
		{"RequestBodyBytesMax", c.RequestBodyBytesMax, 0, 1 << 62},
		{"RetriesMax", int64(c.RetriesMax), 0, RetriesMaxLimit},
		{"Via", int64(len(c.Via)), 0, ViaBytesMax},
	} {
		if b.v < b.lo || b.v > b.hi {
			return c, &serval.ConfigError{Field: "proxy." + b.name, Msg: strconv.FormatInt(b.v, 10) + " not in [" +
				strconv.FormatInt(b.lo, 10) + ", " + strconv.FormatInt(b.hi, 10) + "]"}
		}
	}
	if err := CheckClientCertHeader(c.ClientCertHeader); err != nil {
		return c, &serval.ConfigError{Field: "proxy.ClientCertHeader", Msg: err.Error()}
	}
	if err := CheckVia(c.Via); err != nil {
		return c, &serval.ConfigError{Field: "proxy.Via", Msg: err.Error()}
	}
	return c, nil
}

// errVia is CheckVia's error.
var errVia = errors.New("not a pseudonym: a token, optionally followed by :port (RFC 9110 §7.6.3)")

// CheckVia reports whether v may be Config.Via: empty (off), or a
// received-by pseudonym of at most ViaBytesMax bytes, a token with an
// optional ":port" (RFC 9110 §7.6.3).
func CheckVia(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > ViaBytesMax {
		return errVia
	}
	name := v
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		name = v[:i]
		port := v[i+1:]
		if port == "" {
			return errVia
		}
		for j := 0; j < len(port); j++ {
			if port[j] < '0' || port[j] > '9' {
				return errVia
			}
		}
	}
	if !http1.ValidFieldName([]byte(name)) {
		return errVia
	}
	return nil
}

// CheckClientCertHeader reports whether name may be Config.ClientCertHeader:
// empty (off), or a field name of at most 64 bytes that the proxy does not
// manage itself (not hop-by-hop, Host, Content-Length, X-Forwarded-*, Via,
// ...).
func CheckClientCertHeader(name string) error {
	switch {
	case name == "":
		return nil
	case len(name) > fieldNameBytesMax:
		return errors.New("field name longer than " + strconv.Itoa(fieldNameBytesMax) + " bytes")
	case !http1.ValidFieldName([]byte(name)):
		return errors.New(strconv.Quote(name) + " is not a field name")
	case managedField([]byte(name)):
		return errors.New(strconv.Quote(name) + " is a field the proxy manages itself")
	}
	return nil
}

// Forwarder forwards requests to upstreams. One per server; safe for
// concurrent use through per-slot Sessions.
type Forwarder struct {
	cfg    Config
	h      serval.Handler
	hooks  serval.Hooks
	pool   serval.Pool
	m      serval.Metrics
	t      serval.Tracer
	log    *slog.Logger
	dialer *client.Dialer
	lim    http1.Limits
	via    []byte // "1.1 <Via>", nil when Via is empty
	via10  []byte // "1.0 <Via>": for a message received in HTTP/1.0
	// certName is ClientCertHeader (nil when off), certLower its lower
	// case for comparisons.
	certName  []byte
	certLower string
	// reserve is the pool's optional connection cap (pool.Fixed has one):
	// a dial happens only under a reservation.
	reserve reserver
	// closing is the pool's optional wait for an upstream's close
	// (serval.ClosingPool; pool.Fixed has it).
	closing serval.ClosingPool
	// watch lists the sessions in service for WatchClients.
	watch watchList
	// bufs lends the upstream read buffers to exchanges, pumpBufs the
	// request body pumps' buffers to their jobs (readbufs.go).
	bufs, pumpBufs readBufs
	// arena holds the sessions' buffers, outside the Go heap (see
	// internal/slab); released when the forwarder is garbage (every
	// session refers to it).
	arena *slab.Arena
}

// reserver is the optional pool capability that caps connections per
// upstream: TryReserve before a dial, Unreserve when the dial failed.
type reserver interface {
	TryReserve(u *serval.Upstream) bool
	Unreserve(u *serval.Upstream)
}

// New builds a forwarder over the handler, its hooks, the pool and the
// observers. pool, m and t may be nil (no reuse, no-op observers). The
// forwarder reports nothing to m and t yet: connections and requests are
// counted, and each request's span is made, by the server; per-upstream
// outcomes reach the handler's OnUpstreamDone (metrics.Counters takes
// them there). They are kept for the upstream spans and series to come.
func New(cfg Config, h serval.Handler, hooks serval.Hooks, pool serval.Pool, m serval.Metrics, t serval.Tracer) (*Forwarder, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, &serval.ConfigError{Field: "proxy.handler", Msg: "nil"}
	}
	if pool == nil {
		pool = nopPool{}
	}
	if m == nil {
		m = serval.NoopMetrics{}
	}
	if t == nil {
		t = serval.NoopTracer{}
	}
	f := &Forwarder{cfg: cfg, h: h, hooks: hooks, pool: pool, m: m, t: t, log: cfg.Logger,
		dialer: client.NewDialer(cfg.ConnectTimeout),
		lim:    http1.Limits{HeadBytesMax: cfg.HeadBytesMax, TargetBytesMax: serval.TargetBytesMaxDefault}}
	f.dialer.ConfigureTLS(cfg.UpstreamTLS, cfg.Logger)
	f.reserve, _ = pool.(reserver)
	f.closing, _ = pool.(serval.ClosingPool)
	f.arena = slab.New()
	runtime.AddCleanup(f, (*slab.Arena).Release, f.arena)
	f.bufs.init(f.arena)
	f.pumpBufs.init(f.arena)
	if cfg.Via != "" {
		f.via = []byte("1.1 " + cfg.Via)
		f.via10 = []byte("1.0 " + cfg.Via)
	}
	if cfg.ClientCertHeader != "" {
		f.certName = []byte(cfg.ClientCertHeader)
		f.certLower = strings.ToLower(cfg.ClientCertHeader)
	}
	return f, nil
}

// viaFor is the Via entry for a message received in version v.
func (f *Forwarder) viaFor(v serval.Version) []byte {
	if v == serval.Version10 {
		return f.via10
	}
	return f.via
}

// PrepareUpstreams builds the TLS client of every upstream in ups with TLS
// set (one per upstream, holding its session cache): call it at startup
// with the upstream table so that configuration errors surface then and
// InsecureSkipVerify warnings are logged once. An upstream not prepared
// gets its client on its first dial.
func (f *Forwarder) PrepareUpstreams(ups []serval.Upstream) error {
	return f.dialer.PrepareTLS(ups)
}

// UpstreamTLSStats sums the TLS counters of every upstream: handshakes,
// failures by reason, and connections offloaded to kernel TLS versus kept
// in user space.
func (f *Forwarder) UpstreamTLSStats() tlsconn.Stats { return f.dialer.TLSStats() }

// nopPool keeps nothing: every Release closes.
type nopPool struct{}

func (nopPool) Acquire(*serval.Upstream) *serval.UpstreamConn { return nil }
func (nopPool) Release(c *serval.UpstreamConn, _ bool)        { c.Conn.Close() }
func (nopPool) Drain()                                        {}
