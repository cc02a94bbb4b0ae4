package lb

import (
	"errors"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// Selector picks the upstream for one request. It returns a pointer into
// its table, or nil when no upstream may take the request (the server
// then answers 503). Select is called concurrently from every connection
// and must not allocate or block.
type Selector interface {
	Select(x *serval.Exchange, req *serval.Request) *serval.Upstream
}

// Handler is a serval.Handler that delegates selection to a Selector.
// Embed it, or wrap it, to add hooks (OnRequest, OnLog, ...) to a
// load-balancing proxy.
type Handler struct {
	sel Selector
}

var _ serval.Handler = (*Handler)(nil)

// ErrNilSelector is returned by NewHandler for a nil selector.
var ErrNilSelector = errors.New("lb: nil selector")

// NewHandler returns a handler over sel.
func NewHandler(sel Selector) (*Handler, error) {
	if sel == nil {
		return nil, ErrNilSelector
	}
	return &Handler{sel: sel}, nil
}

// SelectUpstream returns the selector's choice, nil when none is healthy.
func (h *Handler) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	return h.sel.Select(x, req)
}

// Errors returned when a selector's table is unusable.
var (
	ErrNoUpstreams     = errors.New("lb: empty upstream table")
	ErrTooManyUpstream = errors.New("lb: more than serval.UpstreamsMax upstreams")
	ErrIndexMismatch   = errors.New("lb: table[i].Index != i")
	ErrHealthSize      = errors.New("lb: health state tracks a different number of upstreams")
)

// checkTable validates a selector's table against the limits and the
// health state, and fills each upstream's cached address so concurrent
// Addr calls on the data path only read it.
func checkTable(table []serval.Upstream, h *health.State) error {
	if len(table) == 0 {
		return ErrNoUpstreams
	}
	if len(table) > serval.UpstreamsMax {
		return ErrTooManyUpstream
	}
	for i := range table {
		// Pools and the health bitmap key on Index; a table whose
		// indexes disagree with positions would mix up upstreams.
		if int(table[i].Index) != i {
			return ErrIndexMismatch
		}
		_ = table[i].Addr()
	}
	if h != nil && h.Len() != len(table) {
		return ErrHealthSize
	}
	return nil
}
