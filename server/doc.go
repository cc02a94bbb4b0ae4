// Package server is Serval's HTTP/1.1 front end: the accept loop, the fixed
// table of connection slots, the per-connection state machine, hook
// dispatch, limits, timeouts and graceful drain.
//
// Layer 5 (orchestration): it imports the vocabulary (serval), the parser
// (http1), tlsconn, the forwarder (proxy), internal/sockio and
// internal/slab, and golang.org/x/sys/unix; nothing imports it but
// programs.
//
// # Memory
//
// New allocates everything a connection needs, once: Config.ConnectionsMax
// slots, each with a read buffer (request heads and buffered body bytes), a
// write buffer (response heads, direct bodies, streamed chunks), a
// serval.Request with its field table, a serval.Exchange with its PathBuf,
// a request body reader with its chunked decoder, a LogEntry, a ConnInfo
// and a proxy.Session. The read and write buffers are lent, one set per
// slot, last in first out (bufsets.go): a plain keep-alive connection
// whose last request was answered directly gives its set back while it
// waits for its next request and takes the warmest one when the request
// is there, so the buffers a request touches are mostly the ones the
// request before used, still in the CPU's caches.
// The buffers are mapped outside the Go heap
// (internal/slab), so the garbage collector paces itself on what traffic
// allocates, not on the slot table's size; they are given back when the
// server is garbage. Free slots are a stack of indexes, the last freed
// taken first, so a server below its slot count reuses warm slots. The
// keep-alive loop answering a direct response allocates nothing per
// request (alloc_test.go pins it).
//
// # A connection
//
//  1. Accept takes a free slot. With none free, the longest-idle keep-alive
//     connection (waiting for its next request with no byte of it received,
//     or for the first byte of its TLS ClientHello; one whose next bytes
//     are already in its socket is spared) is evicted
//     (CloseEvicted) and its slot given to the new connection: one idle
//     a second between requests, or a new one silent for 250 ms;
//     with no idle connection either, the new one waits up to
//     SlotWaitTimeout for a slot to free (later ones wait in the listen
//     backlog), and is closed (CloseSlotsFull) if none does; until a slot
//     frees again, new connections finding none are closed at once.
//  2. One goroutine per connection runs the slot (the slot's own, kept
//     parked between its connections for up to 10 s so its stack stays
//     grown: worker.go): wait for the first byte of
//     a head (IdleTimeout; for a fresh connection the smaller of IdleTimeout
//     and HeaderReadTimeout), then read the whole head within
//     HeaderReadTimeout of that byte and parse it in place with
//     http1.ParseRequest. The head always starts at offset 0 of the read
//     buffer: leftover pipelined bytes are moved there between requests, so
//     body bytes buffered after the head never overwrite the views the
//     Request holds.
//  3. Per request: Exchange reset, Metrics.RequestStarted, a "request" span,
//     then OnRequest(x, req, buf) where buf is the tail half of the slot's
//     write buffer (the head half builds the response head). The Action:
//     Continue selects an upstream (503 when none) and calls
//     proxy.Session.Forward, which writes the response itself; Respond,
//     Reject and Stream are written by this package. A direct response
//     whose connection stays open while the read buffer already holds
//     the next request (a pipelining client) is kept back and leaves with
//     the responses after it in one write; kept responses are flushed
//     before anything that may wait on the network (respond.go,
//     writeFinal), but not before the next request's OnRequest: a
//     handler that blocks there (a database call) delays the responses
//     kept before it by as long as it blocks, and their
//     Timings.Total ends when they were complete in the buffer. The
//     batch costs one write instead of one per response (see the
//     README's pipelined figures); a handler that may block should do it
//     in NextChunk (Stream: the kept responses leave with the head), or
//     answer with Continue (the proxy waits after flushing).
//  4. A request body the handler did not read is drained up to
//     BodyDrainBytesMax after the response, else the connection closes, so
//     body bytes are never parsed as the next request.
//  5. OnLog, Metrics.RequestFinished (with ByteMetrics.RequestBytes when
//     the Metrics has it) and Tracer.EndSpan close the request;
//     the loop continues while both sides keep the connection alive and
//     MaxRequestsPerConnection is not reached (the last response carries
//     "Connection: close").
//  6. A connection closed while the client may still be sending (an unread
//     body, bytes after a refused head, pipelined requests left unanswered)
//     closes in stages, RFC 9112 §9.6: the sending side shuts first, input
//     is discarded until the client closes or for lingerMax at most, then
//     the socket closes. A client thus reads the 413 or 400 that explains
//     the close instead of a reset. A lingering slot counts as idle and is
//     the first one evicted (linger.go).
//
// # TLS
//
// With Config.TLS set, every accepted connection runs the TLS handshake
// (tlsconn.Server.Handshake) on its own goroutine before its first
// request, holding its slot for at most the handshake timeout: a client
// that never completes loses the slot at the deadline (CloseTLSHandshake).
// A failed handshake (timeout, TLS 1.0/1.1, no common cipher, a missing
// or untrusted client certificate under mTLS) is counted by reason
// (TLSStats) and logged at info level, never fatal; plain HTTP sent to
// the TLS port is answered "400" and closed. Such a connection runs no
// connection hook. It closes in stages, as in step 6, after the alert
// (or the 400): a TLS 1.3 client has sent its request before the server
// checks its certificate, and closing over it would reset the connection
// ("connection reset by peer") instead of delivering the alert
// ("certificate required"). That linger lasts half a second and reads
// 256 KiB at most (handshakeLingerMax, handshakeLingerBytesMax), never
// past the handshake timeout, and its slot is the first evicted. ALPN
// "http/1.1" (or none) is served by the HTTP/1.1 loop; handshake() is
// where "h2" would branch off. Another protocol negotiated (one
// ServerConfig.ALPN advertises) ends the connection with close_notify,
// in stages likewise: the client's first bytes may be in.
//
// After the handshake, requests see Exchange.TLS and Exchange.TLSInfo
// (version, SNI, ALPN, offload, the verified client identity), filled
// once per connection: nothing is computed per request. The connection's
// bytes go through the TLS connection: a *tlsconn.Conn when the kernel
// took the records over (kernel TLS), a *tlsconn.RecordConn (Serval's
// allocation-free record layer) in user space for AES-GCM and
// ChaCha20-Poly1305 suites, or a *tlsconn.CryptoConn (crypto/tls) otherwise (resumed
// TLS 1.2). Only in the
// first case is the raw socket lent to the proxy (Downstream.TCP)
// so Content-Length bodies are spliced; see proxy's ktls.go for reads of
// control records. ReloadTLS re-reads the certificate files without a
// restart; PrepareUpstreams builds the per-upstream TLS clients for
// origination (proxy.Config.UpstreamTLS); TLSStats and UpstreamTLSStats
// count handshakes and offloaded versus user-space connections.
//
// # Errors
//
// A malformed head is answered with the parser's status (400, 414, 431,
// 501, 505), a short text body and "Connection: close", then the
// connection closes. CONNECT is answered 501. A Content-Length above
// RequestBodyBytesMax is answered 413 before any hook runs; a chunked body
// crossing it makes Exchange.Body return a *serval.StatusError 413, and
// the server then answers 413 and closes if the handler returns Continue.
// A handler that read the body and returns Continue gets 500 (the body is
// gone, it cannot be forwarded). Such handler mistakes (that one, a status
// outside [200, 999], an unknown action kind, a Stream without NextChunk, a
// chunk longer than its buffer, an invalid field) are also logged at error
// level: the 500 or the cut stream alone does not say whose bug it is.
//
// # Panics
//
// The recover of the package is in the connection goroutine: a panic in a
// hook (or anywhere on the connection) is logged with its stack; when no
// response byte of the current request was written (by the server or, for
// a forwarded request, by the proxy) the client gets a 500, and the
// connection is closed. The request is logged (OnLog, with status 500 when
// nothing else was sent and the error "server: panic in handler"), counted and its
// span ended like any other; a panic of OnLog itself there is swallowed.
// The slot's proxy.Session is replaced, since the panic may have left it
// mid-exchange. The server keeps serving other connections. User code
// that runs after that recover, as the connection closes
// (OnConnectionClose, Metrics.ConnectionClosed, and the observers of a
// request a panic ended), is guarded on its own: its panic is logged and
// the close goes on.
//
// # Shutdown
//
// When the context given to Serve ends: the listener closes, idle
// keep-alive connections close at once, in-flight requests finish and
// their responses carry "Connection: close"; a connection that has not
// sent its first request yet (or is in its TLS handshake) gets one second
// to send it, and is answered the same way: its client, with no earlier
// answer on it, would not retry a request lost to the close. At
// ShutdownTimeout every connection is closed hard. A listener a service
// manager passed (ActivatedListeners) stays open in the manager, so
// connections made meanwhile wait for the next process. Serve returns when every connection goroutine has exited (a hook
// that blocks forever therefore blocks Serve).
package server
