package serval

import (
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// UpstreamIndex is an upstream's position in its table, < UpstreamsMax.
type UpstreamIndex uint16

// Upstream is one backend. Upstreams live in a table built at startup;
// handlers return pointers into it, so selecting one never allocates.
// Set every field before the table is first used, and do not change it
// afterwards.
type Upstream struct {
	// Host is a host name or IP literal.
	Host string
	Port uint16
	// Index is the position in the table the upstream belongs to; pools
	// and health tracking key on it (ParseUpstreams and NewUpstream set
	// it; a table written as a literal must too). Two tables may use the
	// same indexes, e.g. one per lb.Handler of a gateway with several
	// groups: a pool then shares that index's idle stack between them,
	// and hands out a connection only to the upstream it was dialled for
	// (UpstreamConn.Peer). What else keys on the index is shared too: a
	// pool's per-upstream cap and counters, the proxy's TLS client
	// (session cache) of an HTTPS upstream, which two HTTPS upstreams of
	// one index with different names rebuild in turn, and the
	// per-upstream series of a metrics.Counters (attempts, failures,
	// latency), which promexport labels with the address of one table's
	// upstream of that index: the groups' upstreams of one index are
	// counted together under that one name.
	Index UpstreamIndex
	// TLS originates HTTPS to this upstream.
	TLS bool
	// ServerName overrides the TLS server name (SNI and verification).
	// Empty: Host, unless Host is an IP literal.
	ServerName string
	// Weight is used by weighted selectors; 0 means 1.
	Weight uint32

	// addr points to "host:port", set at most once (atomically: an
	// upstream written as a literal is first used by many connections
	// at once).
	addr unsafe.Pointer
	// http10 is 1 while the upstream's last response was HTTP/1.0
	// (atomic: NoteVersion, HTTP10).
	http10 uint32
}

// NoteVersion records the HTTP version of a response from the upstream
// (a proxy calls it on every final response head). It writes only when
// the version changes, so the common case is one atomic load.
func (u *Upstream) NoteVersion(v Version) {
	old := atomic.LoadUint32(&u.http10)
	if now := boolUint32(v == Version10); now != old {
		atomic.StoreUint32(&u.http10, now)
	}
}

// HTTP10 reports whether the upstream's last response was HTTP/1.0: it
// may not understand a chunked request body (RFC 9112 §6.1: a client
// sends Transfer-Encoding only to a server it knows handles HTTP/1.1).
func (u *Upstream) HTTP10() bool { return atomic.LoadUint32(&u.http10) != 0 }

func boolUint32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// NewUpstream returns an upstream for host:port at index idx.
func NewUpstream(host string, port uint16, idx UpstreamIndex) Upstream {
	u := Upstream{Host: host, Port: port, Index: idx}
	u.Addr()
	return u
}

// Addr returns "host:port", computed once (dialing must not allocate a
// string per request). Safe for concurrent use.
func (u *Upstream) Addr() string {
	if p := atomic.LoadPointer(&u.addr); p != nil {
		return *(*string)(p)
	}
	s := net.JoinHostPort(u.Host, strconv.Itoa(int(u.Port)))
	atomic.CompareAndSwapPointer(&u.addr, nil, unsafe.Pointer(&s))
	return *(*string)(atomic.LoadPointer(&u.addr))
}

// SameBackend reports whether u and v reach the same backend the same
// way: one address, TLS or not, one server name. A connection dialled
// for one may serve the other.
func (u *Upstream) SameBackend(v *Upstream) bool {
	return u == v || u.Host == v.Host && u.Port == v.Port && u.TLS == v.TLS && u.ServerName == v.ServerName
}

// ParseUpstreams parses "host:port,host:port" into a table with indexes in
// order. It rejects empty entries, bad ports, hosts with a space or a
// control character, and more than UpstreamsMax.
func ParseUpstreams(list string) ([]Upstream, error) {
	var out []Upstream
	start := 0
	for i := 0; i <= len(list); i++ {
		if i < len(list) && list[i] != ',' {
			continue
		}
		item := list[start:i]
		start = i + 1
		if strings.Contains(item, "://") {
			return nil, &ConfigError{Field: "upstreams", Msg: "bad address " + strconv.Quote(item) + ": host:port without a scheme (an upstream's TLS is set apart)"}
		}
		host, portStr, err := net.SplitHostPort(item)
		if err != nil {
			return nil, &ConfigError{Field: "upstreams", Msg: "bad address " + strconv.Quote(item) + ": " + err.Error()}
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, &ConfigError{Field: "upstreams", Msg: "bad port in " + strconv.Quote(item)}
		}
		if host == "" {
			return nil, &ConfigError{Field: "upstreams", Msg: "empty host in " + strconv.Quote(item)}
		}
		if !noSpaceOrControl(host) {
			// " 10.0.0.2:80" from "a:80, 10.0.0.2:80": no name resolves
			// with the space, and the backend would only ever fail.
			return nil, &ConfigError{Field: "upstreams", Msg: "space or control character in host " + strconv.Quote(host) + " of " + strconv.Quote(item) + " (separate entries with a comma alone)"}
		}
		if len(out) == UpstreamsMax {
			return nil, &ConfigError{Field: "upstreams", Msg: "more than " + strconv.Itoa(UpstreamsMax) + " upstreams"}
		}
		out = append(out, NewUpstream(host, uint16(port), UpstreamIndex(len(out))))
	}
	return out, nil
}

// noSpaceOrControl reports whether s holds no space or ASCII control
// byte (a host name or an IP literal never does).
func noSpaceOrControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// UpstreamConn is one connection to an upstream, owned by a Pool while
// idle and by one exchange while in use.
type UpstreamConn struct {
	// Conn is the connection: the TCP socket for plain upstreams (the
	// client package's dialer wraps it to read through a readiness poller),
	// a TLS connection otherwise. Close a connection through Conn, never
	// through TCP or Socket: Conn's Close also takes the socket out of the
	// poller.
	Conn net.Conn
	// TCP is the raw socket when bodies may be spliced to it (plain or
	// kernel TLS), nil otherwise.
	TCP *net.TCPConn
	// Socket is the TCP socket under Conn, TLS in user space included:
	// pools peek at it to tell whether an idle connection is still good.
	Socket *net.TCPConn
	// Upstream is the index of the upstream it connects to; TLS tells a
	// plain from an encrypted connection to the same address.
	Upstream UpstreamIndex
	TLS      bool
	// Peer is the upstream it was dialled for (nil: unknown). A pool
	// hands the connection only to an upstream that is Peer or the same
	// backend (Upstream.SameBackend): tables whose indexes overlap never
	// get each other's connections.
	Peer *Upstream
	// Created is when the connection was dialled; IdleSince when it was
	// last released to a pool (the pool sets it in Release).
	Created   time.Time
	IdleSince time.Time
	// IdleMax, when not 0, is how long the upstream said it keeps the
	// connection open while idle (its Keep-Alive: timeout=, less a
	// margin): a pool closes it sooner than its own idle timeout then,
	// rather than send a request as the upstream closes it.
	IdleMax time.Duration
	// Requests counts the exchanges it has carried.
	Requests uint32
	// Deadlines renews the socket's deadlines lazily; whoever changes
	// them another way calls Deadlines.Forget.
	Deadlines Deadlines
}

// Pool keeps idle upstream connections for reuse.
type Pool interface {
	// Acquire returns an idle connection to the upstream, or nil. It never
	// dials and never blocks. It must not return a connection whose peer
	// has closed or sent bytes while it was idle (a cheap non-blocking
	// peek): the proxy relies on it to catch bytes an upstream sent after
	// a spliced response. The connection may carry the deadlines its last
	// exchange set: set your own before any I/O.
	Acquire(u *Upstream) *UpstreamConn
	// Release gives a connection back after an exchange. reusable is true
	// only when both messages ended cleanly and neither side asked to
	// close; otherwise (or when the pool is full) the pool closes it.
	Release(c *UpstreamConn, reusable bool)
	// Drain closes every idle connection.
	Drain()
}

// ClosingPool is an optional Pool method, detected once when the proxy
// is built. The proxy calls ReleaseClosing, instead of Release(c, false),
// for a connection whose exchange ended cleanly but whose upstream said
// it closes it (Connection: close, or HTTP/1.0 without keep-alive). The
// pool never reuses it: it closes it once the upstream's FIN (or any
// byte) arrived, or after a short grace. The side of a TCP connection
// that closes first keeps its TIME_WAIT state; a proxy that closes as
// soon as each such answer ends, often a moment before the upstream's
// FIN, piles those up on its own ephemeral ports toward that upstream.
type ClosingPool interface {
	ReleaseClosing(c *UpstreamConn)
}
