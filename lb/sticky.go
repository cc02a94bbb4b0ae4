package lb

import (
	"strconv"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// stickyIDBytes is the length of a sticky cookie value: 16 hex digits of
// a 64-bit hash of the upstream's address.
const stickyIDBytes = 16

// stickyMark is the sentinel Sticky stores in Exchange.User when the
// response must carry a Set-Cookie (the request had no valid cookie). A
// pointer in an interface does not allocate.
var stickyMark = new(byte)

// Sticky is sticky sessions by cookie, a wrapper around another
// selector: a request whose cookie Name names a healthy upstream goes to
// it; any other request goes where the wrapped selector says, and the
// response gets "Set-Cookie: Name=<id>; Path=/; HttpOnly" (plus
// "; Secure" when the client came over TLS) so the client's next requests
// follow (lb.Handler's OnResponse adds it).
//
// Why: applications that keep session state in process memory need a
// client to come back to the same upstream; a cookie does that without
// the skew of hashing client IPs behind a NAT. When the pinned upstream
// is unhealthy the request fails over to the wrapped selector and the
// response re-pins the client to the new upstream.
//
// The cookie value is an opaque id: 16 lower-case hex digits of the
// FNV-1a hash of the upstream's "host:port". It does not reveal the
// address, stays the same across restarts and table reorderings (so a
// deploy does not unpin every client), and is looked up in a map keyed
// by the id (m[string(b)] does not allocate): O(1).
type Sticky struct {
	name   string
	table  []serval.Upstream
	h      *health.State
	inner  Selector
	byID   map[string]serval.UpstreamIndex
	ids    [][]byte // upstream index -> cookie value
	setCkV [][]byte // upstream index -> "name=id; Path=/; HttpOnly"
	setCkS [][]byte // the same with "; Secure"
}

var _ Selector = (*Sticky)(nil)

// NewSticky wraps inner with cookie stickiness. name must be a valid
// cookie name (an HTTP token). h may be nil.
func NewSticky(name string, table []serval.Upstream, h *health.State, inner Selector) (*Sticky, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	if inner == nil {
		return nil, ErrNilSelector
	}
	if !isToken(name) {
		return nil, ErrCookieName
	}
	s := &Sticky{name: name, table: table, h: h, inner: inner, byID: make(map[string]serval.UpstreamIndex, len(table))}
	for i := range table {
		id := StickyID(&table[i])
		if _, dup := s.byID[id]; dup {
			return nil, ErrDuplicateUpstream
		}
		s.byID[id] = serval.UpstreamIndex(i)
		s.ids = append(s.ids, []byte(id))
		s.setCkV = append(s.setCkV, []byte(name+"="+id+"; Path=/; HttpOnly"))
		s.setCkS = append(s.setCkS, []byte(name+"="+id+"; Path=/; HttpOnly; Secure"))
	}
	return s, nil
}

// StickyID returns the cookie value that pins a client to u.
func StickyID(u *serval.Upstream) string {
	s := strconv.FormatUint(hashString(u.Addr()), 16)
	for len(s) < stickyIDBytes {
		s = "0" + s
	}
	return s
}

// Select returns the pinned upstream when the request's cookie names a
// healthy one, else the wrapped selector's choice, marking the exchange
// so the response re-pins the client.
func (s *Sticky) Select(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	if u := s.Pinned(req); u != nil {
		return u
	}
	u := s.inner.Select(x, req)
	if u != nil && x != nil && x.User == nil {
		x.User = stickyMark
	}
	return u
}

// Pinned returns the healthy upstream the request's cookie names, or nil.
func (s *Sticky) Pinned(req *serval.Request) *serval.Upstream {
	i, ok := s.pin(req)
	if !ok || (s.h != nil && !s.h.Healthy(i)) {
		return nil
	}
	return &s.table[i]
}

// PinnedAny returns the upstream the request's cookie names, healthy or
// not, or nil: with every upstream out and AllUnhealthyTryAll, requests
// go to every upstream as if healthy, and a pinned client keeps its own
// (its session state lives there) instead of being re-pinned at random
// on each request.
func (s *Sticky) PinnedAny(req *serval.Request) *serval.Upstream {
	if i, ok := s.pin(req); ok {
		return &s.table[i]
	}
	return nil
}

// pin returns the index of the upstream the request's cookie names.
func (s *Sticky) pin(req *serval.Request) (serval.UpstreamIndex, bool) {
	if req == nil {
		return 0, false
	}
	v, ok := cookieValue(req, s.name)
	if !ok {
		return 0, false
	}
	i, ok := s.byID[string(v)]
	return i, ok
}

// SetCookie returns the Set-Cookie value that pins a client to u
// ("name=id; Path=/; HttpOnly", and "; Secure" when secure: the client
// came over TLS, so the cookie never travels in the clear), precomputed:
// the slice is shared and must not be modified.
func (s *Sticky) SetCookie(u *serval.Upstream, secure bool) []byte {
	if secure {
		return s.setCkS[u.Index]
	}
	return s.setCkV[u.Index]
}

// NeedsCookie reports whether the response to this exchange should set
// the cookie: the request had no valid one (Select marked the exchange),
// or Exchange.User already held the handler's own value so Sticky could
// not mark it — then the cookie is always (re)set, which is harmless.
func (s *Sticky) NeedsCookie(x *serval.Exchange) bool {
	return x.Upstream != nil && x.User != nil
}

// clearMark removes Sticky's mark so the handler's own code never sees it.
func clearMark(x *serval.Exchange) {
	if p, ok := x.User.(*byte); ok && p == stickyMark {
		x.User = nil
	}
}

// isToken reports whether s is an RFC 9110 token (header and cookie
// names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' ||
			c == '+' || c == '-' || c == '.' || c == '^' || c == '_' || c == '`' || c == '|' || c == '~':
		default:
			return false
		}
	}
	return true
}
