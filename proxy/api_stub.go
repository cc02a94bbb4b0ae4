package proxy

// THIS FILE IS A STUB: the contract between server and proxy. The proxy
// implementer replaces it with real files (keep the exported shapes; add
// fields as needed and tell the server owner).

import (
	"log/slog"
	"net"
	"time"

	"github.com/servalproxy/serval"
)

// Config configures forwarding. Zero fields take defaults in New.
type Config struct {
	// ConnectTimeout bounds dialling an upstream (504 when it runs out).
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the upstream's response head
	// after the request head was written (504), and each read stall of the
	// response body.
	ResponseTimeout time.Duration
	// BodyReadTimeout bounds each stall reading the client's request body.
	BodyReadTimeout time.Duration
	// WriteTimeout bounds each stall writing to the client or upstream.
	WriteTimeout time.Duration
	// TrustForwarded keeps incoming X-Forwarded-* fields (appending to
	// X-Forwarded-For); false (default) replaces them.
	TrustForwarded bool
	// Via, when non-empty, is the pseudonym added as "Via: 1.1 <Via>".
	Via string
	// HeadBytesMax, FieldsMax bound the upstream response head.
	HeadBytesMax int
	FieldsMax    int
	// TrailerBytesMax bounds chunked trailers both ways.
	TrailerBytesMax int
	// BufferBytes is the size of the session's upstream read buffer
	// (response heads and chunked bodies), >= HeadBytesMax.
	BufferBytes int
	// RequestBodyBytesMax bounds a proxied request body (413 above it).
	RequestBodyBytesMax int64
	// RetriesMax bounds OnError-requested retries on another upstream.
	RetriesMax int
	Logger     *slog.Logger
}

// Forwarder forwards requests to upstreams. One per server; safe for
// concurrent use through per-slot Sessions.
type Forwarder struct{ _ [0]func() }

// New builds a forwarder over the handler, its hooks, the pool and the
// observers.
func New(cfg Config, h serval.Handler, hooks serval.Hooks, pool serval.Pool, m serval.Metrics, t serval.Tracer) (*Forwarder, error) {
	return &Forwarder{}, nil
}

// Downstream is the client side of an exchange, lent by the server for
// one Forward call.
type Downstream struct {
	// Conn is the client connection.
	Conn net.Conn
	// TCP is the raw socket when body bytes may be spliced to and from it
	// (plain TCP, or kernel TLS), nil otherwise.
	TCP *net.TCPConn
	// Buf is the connection's read buffer (its full capacity may be used).
	// Buf[Head:End] holds bytes read past the request head: the start of
	// the body, perhaps followed by pipelined requests. Forward updates
	// Head and End so that on return Buf[Head:End] holds exactly the bytes
	// read from the client past this request's body.
	Buf       []byte
	Head, End int
	// ClientAddr is the client's address (for X-Forwarded-For).
	ClientAddr []byte
	// TLS is true when the client connection is TLS (X-Forwarded-Proto).
	TLS bool
}

// Result tells the server how the exchange ended.
type Result struct {
	// KeepAlive is true when the client connection may carry another
	// request: the request body was read to its end and the response was
	// completely and correctly framed.
	KeepAlive bool
	// Status is the status sent to the client, 0 when nothing was sent.
	Status int
	// Phase and Err say what failed, if anything.
	Phase serval.Phase
	Err   error
}

// Session is one connection slot's forwarding state (buffers, parsed
// response, decoders, body pump), allocated once per slot at startup.
type Session struct{ _ [0]func() }

// NewSession allocates a session. Call once per connection slot.
func (f *Forwarder) NewSession() *Session { return &Session{} }

// Forward sends req to up and the response back to the client. It writes
// every response itself, errors included (502, 504, ...).
func (s *Session) Forward(d *Downstream, x *serval.Exchange, req *serval.Request, up *serval.Upstream) Result {
	return Result{Phase: serval.PhaseConnect, Err: errStub}
}

var errStub = &serval.StatusError{Status: 502, Msg: "proxy: not implemented yet"}

// Close releases the session (stops its body pump goroutine, if any).
func (s *Session) Close() {}
