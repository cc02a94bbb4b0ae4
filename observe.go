package serval

import (
	"net/netip"
	"time"
)

// ConnInfo describes a client connection for the connection hooks.
type ConnInfo struct {
	ID         uint64
	ClientAddr netip.AddrPort
	LocalAddr  netip.AddrPort
	TLS        bool
	// TLSInfo is the connection's TLS description (nil when plain), the
	// same value Exchange.TLSInfo points to.
	TLSInfo *TLSInfo
	Opened  time.Time
	// Requests served on the connection (set at close).
	Requests uint32
	// CloseReason says why it closed (set at close).
	CloseReason CloseReason
}

// CloseReason says why a connection closed.
type CloseReason uint8

const (
	CloseNormal        CloseReason = iota // peer closed or asked to close
	CloseIdleTimeout                      // idle keep-alive timeout
	CloseHeaderTimeout                    // head not complete in time
	CloseBodyTimeout                      // request body stalled
	CloseWriteTimeout                     // client did not read our response
	CloseBadRequest                       // malformed request answered 4xx/5xx
	CloseShutdown                         // server shutting down
	CloseSlotsFull                        // no slot for a new connection
	CloseEvicted                          // idle connection evicted for a new one
	CloseError                            // I/O error or aborted exchange
	CloseRequestsMax                      // MaxRequestsPerConnection reached
	CloseTLSHandshake                     // TLS handshake failed or timed out
)

var closeReasonNames = [...]string{"normal", "idle_timeout", "header_timeout", "body_timeout", "write_timeout", "bad_request", "shutdown", "slots_full", "evicted", "error", "requests_max", "tls_handshake"}

func (r CloseReason) String() string {
	if int(r) < len(closeReasonNames) {
		return closeReasonNames[r]
	}
	return "unknown"
}

// LogEntry is what OnLog receives when a request is finished. Views are
// valid until OnLog returns.
type LogEntry struct {
	Method   []byte
	Path     []byte
	Query    []byte // without the '?'; nil when the target had none
	Host     []byte // the request's Host (or its absolute-form authority)
	Status   int
	Upstream *Upstream
	Start    time.Time
	Timings  Timings
	BytesIn  int64
	BytesOut int64
	Reused   bool
	// Err is the error that ended the exchange, nil on success; Phase
	// says where it happened.
	Err   error
	Phase Phase
	// Reason is the Action.Reason the handler answered with (a Reject's
	// body, or a note on a Respond or Stream), OnRequest's or that of
	// a response OnResponse or OnError sent instead of the upstream's;
	// empty otherwise.
	Reason string
}

// Metrics receives the server's counts: connections and requests,
// proxied ones included (per-upstream outcomes go to the handler's
// OnUpstreamDone). Implementations must be safe for concurrent use and
// must not allocate per call.
type Metrics interface {
	ConnectionOpened()
	ConnectionClosed(reason CloseReason)
	RequestStarted()
	RequestFinished(status int, d time.Duration)
}

// ByteMetrics is an optional Metrics capability, detected once when a
// server is built: the bytes each finished request read from its client
// and wrote to it, heads and bodies (tunnels included), as
// LogEntry.BytesIn and BytesOut. It is called right after RequestFinished.
type ByteMetrics interface {
	RequestBytes(in, out int64)
}

// NoopMetrics discards everything.
type NoopMetrics struct{}

func (NoopMetrics) ConnectionOpened()                  {}
func (NoopMetrics) ConnectionClosed(CloseReason)       {}
func (NoopMetrics) RequestStarted()                    {}
func (NoopMetrics) RequestFinished(int, time.Duration) {}

// SpanHandle identifies a span to the tracer that made it. The zero value
// is "no span".
type SpanHandle struct {
	TraceID [16]byte
	SpanID  [8]byte
	// Slot is the tracer's own index (e.g. into a preallocated span table).
	Slot uint32
}

// Tracer records spans. StartSpan with a zero parent starts a trace.
//
// The server makes one span per request, named "request", with a zero
// parent: it starts it once the head is read, before OnRequest (so every
// hook sees it in Exchange.Span), and ends it after OnLog and the Metrics
// calls, with the error that ended the exchange (nil on success), for a
// request refused with 4xx and one whose handler panicked too. Nothing
// else makes spans yet (no per-attempt upstream span): the proxy is given
// the tracer for those to come. Both methods run on the connection's
// goroutine, concurrently for different connections, and must not block.
type Tracer interface {
	StartSpan(name string, parent SpanHandle) SpanHandle
	EndSpan(s SpanHandle, err error)
}

// NoopTracer records nothing.
type NoopTracer struct{}

func (NoopTracer) StartSpan(string, SpanHandle) SpanHandle { return SpanHandle{} }
func (NoopTracer) EndSpan(SpanHandle, error)               {}

var (
	_ Metrics = NoopMetrics{}
	_ Tracer  = NoopTracer{}
)
