package pool

import "github.com/servalproxy/serval"

// None is a serval.Pool that keeps nothing: Acquire always misses and
// Release always closes. Use it to turn connection reuse off (one dial
// per request), e.g. to compare against Fixed or for upstreams that
// mishandle keep-alive. The zero value is ready; it has no cap, so
// TryReserve always grants.
type None struct{}

var (
	_ serval.Pool = None{}
	_ Reserver    = None{}
)

// Acquire always returns nil.
func (None) Acquire(*serval.Upstream) *serval.UpstreamConn { return nil }

// Release closes the connection.
func (None) Release(c *serval.UpstreamConn, _ bool) { _ = c.Conn.Close() }

// Drain does nothing: there is nothing idle.
func (None) Drain() {}

// TryReserve always grants.
func (None) TryReserve(*serval.Upstream) bool { return true }

// Unreserve does nothing.
func (None) Unreserve(*serval.Upstream) {}
