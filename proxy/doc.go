// Package proxy is Serval's forwarder: it sends a parsed client request to
// an upstream and the upstream's response back to the client, on the
// connections the server and the pool lend it.
//
// Layer 3 (mechanics): it imports serval, http1, tlsconn, client,
// internal/sockio and internal/slab, the standard library and
// golang.org/x/sys/unix. The server (layer 5) owns the client connection and calls
// Session.Forward once per proxied request.
//
// One exchange, in order (Forward):
//
//  1. Rewrite the head into the session's Outbound: hop-by-hop and
//     Connection-listed fields out, X-Forwarded-*, Via in (rewrite.go).
//  2. Acquire a pooled upstream connection or dial one; write the head and
//     the request body bytes already buffered (forward.go).
//  3. A body not wholly buffered streams on the session's pump goroutine
//     (pump.go) while this goroutine reads the response, so an upstream
//     that echoes or answers early never deadlocks us. Content-Length
//     bodies larger than the pump's buffer move socket to socket by
//     splice, smaller ones through the buffer (see step 4); chunked ones
//     are decoded and re-encoded through bounded buffers (body.go).
//  4. Read the response head (1xx forwarded), rewrite it, stream its body
//     the same way (response.go), except that a Content-Length response
//     body whose rest after the head fits a read buffer
//     (Config.BufferBytes) is copied through it: one read and one writev
//     with the head when it has all arrived. The read buffers are the
//     forwarder's, one per session, lent last in first out and only once
//     the answer is there to read (readbufs.go): the buffer a read fills
//     is then mostly the one the exchange before used, still in cache. Splice lends the pages to
//     the client's socket until the client reads them; on loopback (a
//     sidecar, a local origin) that costs both peers more than it saves
//     on such a body, and here the copy costs the proxy no more either.
//  5. Release the upstream connection as reusable only when both messages
//     ended cleanly and nothing else came after the response.
//
// A request that asks to switch protocols (WebSocket) keeps its Upgrade
// field; an upstream's 101 turns both connections into a tunnel, relayed
// both ways until both sides are done or it idles (tunnel.go).
//
// TLS: the client side may be TLS (the server lends the TLS connection as
// Downstream.Conn), and so may the upstream side (Upstream.TLS: the
// dialer runs the handshake with Config.UpstreamTLS; the pool keeps TLS
// and plain connections apart). Bodies are spliced only between sockets
// the kernel reads and writes itself: plain TCP or kernel TLS; TLS in
// user space takes the bounded copy path. Reading a kernel TLS socket by
// splice stops at a control record; ktls.go says how that is handled.
//
// Failures before the response head reached the client become 502 or 504
// answers (errors.go); after it, the client connection is closed so a
// truncated response is never mistaken for a complete one.
//
// Allocation: a session allocates its buffers once; a keep-alive GET on a
// pooled upstream connection allocates nothing (alloc_test.go).
package proxy
