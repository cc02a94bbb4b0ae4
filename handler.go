package serval

import "time"

// Handler decides where a request goes. It is the one method every
// handler has; the hooks below are optional, each its own one-method
// interface, found once by type assertion when the server is built
// (DetectHooks), never on the hot path.
//
// Hook order for one request (as in Pingora's proxy phases):
//
//	OnConnectionOpen (once per connection)
//	OnRequest -> SelectUpstream -> OnUpstreamRequest -> OnUpstreamConnect
//	-> OnRequestBody* -> OnResponse -> OnResponseBody* -> OnLog
//	OnError (when a phase fails), OnUpstreamDone (once per attempt, with
//	its outcome), NextChunk* (streamed responses)
//	OnConnectionClose (once per connection)
//
// OnUpstreamRequest runs once per request, before any connection is
// taken: the head it edits is the one every attempt sends, so an
// ErrorRetry (OnError) sends it unchanged to the next upstream.
// OnUpstreamConnect runs for each connection an attempt takes, pooled
// (reused true) or dialed (a keep-alive-race retry takes a second one). OnRequestBody runs on
// a body that came whole with the head before OnUpstreamRequest (the body
// is framed then), and on a streamed body as it is sent, after the
// connect.
//
// Hooks are found on the value given to server.New, by Go's method sets,
// so wrapping a handler can lose them silently. A wrapper that embeds an
// interface (struct{ serval.Handler }) has that interface's methods only:
// every hook of the wrapped value is gone (embed the concrete type, or an
// interface that lists the hooks too). A struct that embeds two types
// with the same method (lb.Handler and metrics.Counters both have
// OnUpstreamDone) has neither: define the method on the struct and call
// both. DetectHooks(h) in a test, or the server's debug log line
// "server: hooks", shows what was found.
//
// Every argument a hook receives is valid only until the hook returns.
// Hooks of one connection run on one goroutine, except OnRequestBody for
// a body that was not wholly buffered: it runs on the session's body pump
// and may overlap OnResponse/OnResponseBody of the same exchange. Hooks of
// different connections run concurrently, so shared handler state needs
// atomics or locks.
type Handler interface {
	// SelectUpstream returns the upstream for the request, or nil when
	// none is available (the client gets 503).
	SelectUpstream(x *Exchange, req *Request) *Upstream
}

// RequestHook runs when a request head is complete, before selection.
// buf is scratch space the returned Action's Body may point into.
type RequestHook interface {
	OnRequest(x *Exchange, req *Request, buf []byte) Action
}

// RequestBodyHook sees the request body, chunk by chunk, as it streams
// upstream (the body then passes through user space instead of splice).
// A non-nil error aborts the exchange; a *StatusError gives the status.
type RequestBodyHook interface {
	OnRequestBody(x *Exchange, chunk []byte) error
}

// UpstreamConnectHook runs when an upstream connection is ready (reused
// tells a pooled one from a fresh dial).
type UpstreamConnectHook interface {
	OnUpstreamConnect(x *Exchange, u *Upstream, reused bool)
}

// UpstreamRequestHook may edit the outbound head before it is written.
type UpstreamRequestHook interface {
	OnUpstreamRequest(x *Exchange, req *Request, out *Outbound)
}

// ResponseHook runs when the upstream's final response head is read. It
// returns Continue() to forward it, or a Respond/Reject action to send
// instead (the upstream response is then discarded). The replacement is
// sent with Content-Length (Action.Chunked is not honoured here; 204 and
// 304 go without a body); a Stream action, or a status outside [200, 999],
// is not supported here and is answered 500.
type ResponseHook interface {
	OnResponse(x *Exchange, resp *Response, buf []byte) Action
}

// ResponseBodyHook sees the response body chunk by chunk. A non-nil error
// aborts the exchange (the client connection is closed, since the head
// has been sent).
type ResponseBodyHook interface {
	OnResponseBody(x *Exchange, chunk []byte) error
}

// ErrorHook decides what happens when forwarding fails before the
// response head reached the client. A request body that fails on the
// client's side (stalled, cut short, too large, malformed) or that
// OnRequestBody refuses is answered with its own status (408, 400, 413,
// the hook's) without OnError, whether the body was buffered or streaming.
type ErrorHook interface {
	OnError(x *Exchange, err *ProxyError) ErrorAction
}

// LogHook runs once per request when it is finished.
type LogHook interface {
	OnLog(x *Exchange, e *LogEntry)
}

// ConnectionOpenHook runs when a client connection takes a slot; on a
// TLS server, after the handshake, so c.TLSInfo is set. A connection
// whose handshake fails runs neither connection hook (it is counted by
// Metrics with CloseTLSHandshake).
type ConnectionOpenHook interface {
	OnConnectionOpen(c *ConnInfo)
}

// ConnectionCloseHook runs when a client connection is closed.
type ConnectionCloseHook interface {
	OnConnectionClose(c *ConnInfo)
}

// ChunkStreamer produces the body of an ActionStream response. It writes
// the next chunk into buf and returns its length; done=true ends the
// stream (n may be > 0 with done). An error aborts the stream and closes
// the connection. The server frames, flushes and bounds the chunks.
type ChunkStreamer interface {
	NextChunk(x *Exchange, buf []byte) (n int, done bool, err error)
}

// Hooks holds the optional hooks a handler implements, nil where it does
// not.
type Hooks struct {
	Request         RequestHook
	RequestBody     RequestBodyHook
	UpstreamConnect UpstreamConnectHook
	UpstreamRequest UpstreamRequestHook
	Response        ResponseHook
	ResponseBody    ResponseBodyHook
	Error           ErrorHook
	Log             LogHook
	ConnectionOpen  ConnectionOpenHook
	ConnectionClose ConnectionCloseHook
	Stream          ChunkStreamer
	UpstreamDone    UpstreamDoneHook
}

// String lists the hooks present, by method name.
func (k Hooks) String() string {
	var b []byte
	add := func(present bool, name string) {
		if present {
			if len(b) > 0 {
				b = append(b, ' ')
			}
			b = append(b, name...)
		}
	}
	add(k.Request != nil, "OnRequest")
	add(k.RequestBody != nil, "OnRequestBody")
	add(k.UpstreamConnect != nil, "OnUpstreamConnect")
	add(k.UpstreamRequest != nil, "OnUpstreamRequest")
	add(k.Response != nil, "OnResponse")
	add(k.ResponseBody != nil, "OnResponseBody")
	add(k.Error != nil, "OnError")
	add(k.Log != nil, "OnLog")
	add(k.ConnectionOpen != nil, "OnConnectionOpen")
	add(k.ConnectionClose != nil, "OnConnectionClose")
	add(k.Stream != nil, "NextChunk")
	add(k.UpstreamDone != nil, "OnUpstreamDone")
	if len(b) == 0 {
		return "none"
	}
	return string(b)
}

// DetectHooks finds the optional hooks h implements. Call it once.
func DetectHooks(h Handler) Hooks {
	var k Hooks
	k.Request, _ = h.(RequestHook)
	k.RequestBody, _ = h.(RequestBodyHook)
	k.UpstreamConnect, _ = h.(UpstreamConnectHook)
	k.UpstreamRequest, _ = h.(UpstreamRequestHook)
	k.Response, _ = h.(ResponseHook)
	k.ResponseBody, _ = h.(ResponseBodyHook)
	k.Error, _ = h.(ErrorHook)
	k.Log, _ = h.(LogHook)
	k.ConnectionOpen, _ = h.(ConnectionOpenHook)
	k.ConnectionClose, _ = h.(ConnectionCloseHook)
	k.Stream, _ = h.(ChunkStreamer)
	k.UpstreamDone, _ = h.(UpstreamDoneHook)
	return k
}

// ProxyError describes a failed forwarding attempt.
type ProxyError struct {
	Phase  Phase
	Status int   // the status the client gets by default (502, 504, ...)
	Err    error // the underlying error
	// Upstream is the upstream that failed, nil before selection.
	Upstream *Upstream
	// Request is the client's request as received (method, target,
	// fields), for a hook that decides by it, e.g. whether a retry is
	// safe (Method.Idempotent). Like every argument of a hook it is valid
	// during the call only; nil when no request was parsed.
	Request *Request
}

func (e *ProxyError) Error() string {
	if e.Err == nil {
		return "proxy: " + e.Phase.String()
	}
	return "proxy: " + e.Phase.String() + ": " + e.Err.Error()
}

func (e *ProxyError) Unwrap() error { return e.Err }

// UpstreamDoneHook learns the outcome of every upstream attempt: the
// proxy calls it exactly once for each non-nil upstream SelectUpstream
// returned (retries included), when that attempt ends. Selectors use it
// for passive health, in-flight counts and latency averages.
type UpstreamDoneHook interface {
	OnUpstreamDone(x *Exchange, u *Upstream, r UpstreamResult)
}

// UpstreamResult is the outcome of one upstream attempt.
type UpstreamResult struct {
	// Failure is set when the attempt failed in a way that says the
	// upstream may be unhealthy: connect refused or timed out, reset,
	// response-head timeout, invalid response (not a valid one over the
	// proxy's limits: more fields or a larger head than it takes), or a
	// response that failed in its body (Phase PhaseUpstreamBody: cut
	// short, broken framing, a stall), which health.Passive does not
	// count against the upstream (it answered; see Classify).
	Failure bool
	// Phase says where a failure happened.
	Phase Phase
	// Status is the upstream's response status (0 when none arrived).
	Status int
	// Latency is from the request head written to the response head read
	// (0 when no response head arrived).
	Latency time.Duration
}
