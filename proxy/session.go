package proxy

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Downstream is the client side of an exchange, lent by the server for
// one Forward call.
type Downstream struct {
	// Conn is the client connection.
	Conn net.Conn
	// TCP is the raw socket when body bytes may be spliced to and from it
	// (plain TCP, or kernel TLS), nil otherwise (TLS in user space). When
	// Conn is not TCP itself (kernel TLS), a splice read that stops at a
	// TLS control record continues through Conn.Read (see ktls.go).
	TCP *net.TCPConn
	// Socket is the TCP socket under Conn, TLS in user space included, or
	// nil: the client watch (watch.go) asks the kernel whether the client
	// closed it. Without it, Conn itself is tried.
	Socket *net.TCPConn
	// Buf is the connection's read buffer (its full capacity may be used).
	// Buf[Head:End] holds bytes read past the request head: the start of
	// the body, perhaps followed by pipelined requests. Forward updates
	// Head and End so that on return Buf[Head:End] holds exactly the bytes
	// read from the client past this request's body. Forward never writes
	// below the entry value of Head, so the Request's views stay valid.
	Buf       []byte
	Head, End int
	// ClientAddr is the client's address (for X-Forwarded-For).
	ClientAddr []byte
	// TLS is true when the client connection is TLS (X-Forwarded-Proto).
	TLS bool
	// Deadlines renews the client socket's deadlines lazily; the server
	// shares its own so both sides know the deadlines in force. Nil: the
	// session uses one of its own, forgotten at every Forward.
	Deadlines *serval.Deadlines
	// Closing, when set, is read as the response head is built: true (the
	// server began to drain meanwhile) makes the response say
	// "Connection: close", as Request.Close does, and the exchange ends
	// with KeepAlive false.
	Closing *atomic.Bool
	// CutReset, when set, holds true while the response body goes to the
	// client delimited by the connection's close (an HTTP/1.0 client: see
	// Result.Reset), and false otherwise: a server that closes the
	// connection from outside meanwhile (its shutdown deadline) must
	// reset it, or the client takes the cut body for the whole one.
	CutReset *atomic.Bool
}

// closeAsked reports whether the client connection ends after this
// exchange: the client asked (Request.Close), or the server is draining.
func (s *Session) closeAsked() bool {
	return s.req.Close || s.d.Closing != nil && s.d.Closing.Load()
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
	// BodyUnread is true when the request body was streamed and not read
	// to its end (the exchange failed or ended first): more of it may
	// still be arriving, so a server closing the connection should close
	// in stages rather than answer those bytes with a reset.
	BodyUnread bool
	// Reset is true when the response went to the client delimited by
	// the connection's close (an HTTP/1.0 client, a chunked or
	// close-delimited upstream body) and was cut: a clean close would end
	// it as if complete, so the server should close with a reset (RST)
	// instead, the one sign of the cut such a client can see.
	Reset bool
	// TunnelIdle is true when the exchange was an upgrade tunnel that
	// ended because neither side sent a byte for TunnelIdleTimeout: the
	// connection closes for idleness, not for an error.
	TunnelIdle bool
	// Reason is the Action.Reason of the response a hook sent instead of
	// the upstream's (OnResponse's replacement, OnError's ErrorRespond),
	// for LogEntry.Reason; empty when none was sent.
	Reason string
}

// Session is one connection slot's forwarding state (buffers, parsed
// response, decoders, body pump), allocated once per slot at startup. A
// session serves one exchange at a time.
type Session struct {
	f *Forwarder

	// ownDL tracks the client socket's deadlines for a caller that lends
	// no Downstream.Deadlines.
	ownDL serval.Deadlines

	out     serval.Outbound
	scratch []byte // values of the outbound head (X-Forwarded-For, Via, path)
	hbuf    []byte // the outbound head, kept intact for a retry
	wbuf    []byte // response heads and chunk framing to the client
	rbuf    []byte // upstream reads: response heads, bodies; lent for an exchange (readbufs.go)
	shard   int    // the readBufs shard rbuf comes from
	cbuf    []byte // a buffered chunked request body, re-encoded (lazy)
	hookBuf []byte // scratch handed to OnResponse (lazy)
	resp    serval.Response
	dec     http1.ChunkedDecoder
	limResp io.LimitedReader
	renc    encoder     // response body to the client
	rsrc    chunkSource // response body from the upstream
	perr    serval.ProxyError
	cause   error // the I/O error behind perr.Err, when it was mapped (logCause)
	timer   *time.Timer

	// The splice progress callbacks (respProgress, pumpProgress), bound
	// once so passing them allocates nothing.
	respProgressFn, pumpProgressFn func() error

	scratchFull bool

	// The exchange in progress.
	d          *Downstream
	x          *serval.Exchange
	req        *serval.Request
	up         *serval.Upstream
	c          *serval.UpstreamConn
	floor      int // d.Head on entry: Forward never writes below it
	body       reqBodyKind
	bodyOut    []byte    // a wholly buffered body as it goes upstream
	bodyEnd    int       // d.Buf index past a wholly buffered body
	bodySent   bool      // some request body byte may have reached an upstream
	headSent   bool      // the final response head went to the client
	closeOut   bool      // its body goes to the client delimited by the close
	tunnelIdle bool      // the tunnel ended idle (Result.TunnelIdle)
	reason     string    // the Action.Reason of a hook's response sent (Result.Reason)
	cont       bool      // 100 Continue went to the client
	upInterim  bool      // this attempt's upstream sent a 1xx: it had the request (no keep-alive-race retry)
	plain10    bool      // a chunked body was framed for an HTTP/1.0 upstream: de-chunked (planChunked)
	keep       bool      // the client connection may carry another request
	reusable   bool      // the upstream connection may go back to the pool
	upDone     bool      // OnUpstreamDone ran for the current selection
	upgrade    bool      // the request asks to switch protocols, and may (tunnel.go)
	final      bool      // a TRACE or OPTIONS with Max-Forwards: 0: ours to answer (maxforwards.go)
	sentAt     time.Time // when the request head went upstream
	latency    time.Duration
	// date is the Date of the responses the proxy writes itself.
	date http1.DateCache

	// The body pump (pump.go): one goroutine per session, started lazily.
	pj       pumpJob
	pumpGo   chan struct{}
	pumpDone chan struct{}
	pumpExit chan struct{}
	pumpStop atomic.Bool
	pumping  bool // a job was handed to the pump and not collected
	// head is the race between the attempt's final response head and a
	// request body failing on the client's side (headWaiting, headIn,
	// headCut): whichever moves it from headWaiting first wins. A cut
	// body makes the head that comes after it no answer (pumpLoop,
	// attempt).
	head atomic.Int32
	// tunnelSeen is when a byte last went either way through a tunnel
	// (serval.Nanotime); tunnelStop asks the session's side to end.
	tunnelSeen atomic.Int64
	tunnelStop atomic.Bool
	pbuf       []byte

	// w is the session's part of the client watch (watch.go).
	w clientWatch
	// cert is the ClientCertHeader value of the connection (clientcert.go).
	cert clientCert
}

// writeBufBytesMax bounds the client write buffer (response heads,
// chunk framing, small bodies appended to their head): larger bodies are
// written from the read buffer.
const writeBufBytesMax = 32 << 10

// writeBufBytes is the client write buffer's size: BufferBytes up to
// writeBufBytesMax, and always a head of HeadBytesMax with what we add.
func writeBufBytes(cfg *Config) int {
	return max(min(cfg.BufferBytes, writeBufBytesMax), cfg.HeadBytesMax+scratchExtraBytes)
}

// NewSession allocates a session. Call once per connection slot.
func (f *Forwarder) NewSession() *Session {
	cfg := &f.cfg
	// The client certificate's element takes room in the scratch (joined
	// to a trusted incoming list) and in the outbound head.
	certBytes := 0
	if f.certName != nil {
		certBytes = ClientCertBytesMax + len(f.certName) + len(": \r\n")
	}
	s := &Session{
		f:       f,
		scratch: f.arena.Make(cfg.HeadBytesMax + scratchExtraBytes + certBytes)[:0],
		hbuf:    f.arena.Make(2*cfg.HeadBytesMax + scratchExtraBytes + certBytes)[:0],
		wbuf:    f.arena.Make(writeBufBytes(cfg))[:0],
		timer:   time.NewTimer(time.Hour),
	}
	if f.certName != nil {
		s.cert.value = f.arena.Make(ClientCertBytesMax)[:0]
	}
	s.timer.Stop()
	s.shard = f.bufs.grow(cfg.BufferBytes)
	s.respProgressFn, s.pumpProgressFn = s.respProgress, s.pumpProgress
	s.out.Fields = make([]serval.Header, 0, cfg.FieldsMax+extraFieldsMax)
	s.resp.Init(cfg.FieldsMax)
	return s
}

// Abandon ends an exchange a panic interrupted inside Forward: it stops
// the request body pump, ends the client watch and closes the upstream
// connection (never pooled: it may be mid-message). Call it on the
// goroutine that called Forward, after the panic was recovered, then
// Close. It does nothing when no exchange was running.
func (s *Session) Abandon() {
	if s.pumping && s.d != nil {
		s.stopPump()
	}
	s.unwatch()
	s.releaseUpstream(false)
	s.putAnswerBuf()
	s.d, s.x, s.req, s.up = nil, nil, nil, nil
}

// Close releases the session (stops its body pump goroutine, if any, and
// takes it off the client watch); a later Forward starts them again. The
// session must not be in a Forward call (after a panic in one: Abandon
// first).
func (s *Session) Close() {
	s.putAnswerBuf()
	s.unlist()
	if s.pumpGo != nil {
		close(s.pumpGo)
		<-s.pumpExit
		s.pumpGo = nil
	}
}

// Retire closes a session that will not be used again (a server replaces
// the session of a slot whose exchange panicked): the next NewSession
// takes over its share of the forwarder's buffers instead of adding one.
func (s *Session) Retire() {
	s.Close()
	s.f.bufs.shrink(s.shard)
	for _, b := range [...][]byte{s.scratch, s.hbuf, s.wbuf, s.cert.value, s.cbuf, s.hookBuf} {
		s.f.arena.Put(b)
	}
	s.scratch, s.hbuf, s.wbuf, s.cert.value, s.cbuf, s.hookBuf = nil, nil, nil, nil, nil, nil
}

// reqBodyKind is how the request body goes upstream.
type reqBodyKind uint8

const (
	bodyNone     reqBodyKind = iota
	bodyBuffered             // wholly in d.Buf: written with the head, replayable
	bodyLength               // Content-Length, streamed by the pump
	bodyChunked              // chunked, streamed by the pump
)
