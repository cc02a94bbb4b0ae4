// Package client is Serval's upstream HTTP/1.1 client: it dials an
// upstream with a connect deadline, writes a request head, and reads a
// response head (interim 1xx responses included) within limits and a
// deadline, telling how the response body is framed.
//
// Layer 2 (infrastructure): it imports serval (layer 0), http1 and
// tlsconn (layer 1), internal/sockio and the standard library. It moves no bodies: the proxy package
// streams them (splice or bounded copy), because only it knows both sides.
//
// TLS: for an upstream with TLS set, Dial connects and then runs
// tlsconn.Client.Handshake, both within the connect timeout. Each
// upstream has its own tlsconn.Client (ConfigureTLS sets the defaults,
// PrepareTLS builds them at startup), whose session cache lets pooled
// reconnects resume. UpstreamConn.TCP is the raw socket only when the
// connection was offloaded to kernel TLS.
//
// Allocation: Dial allocates (a dial is not the steady state); WriteHead
// and ReadResponse work in caller buffers and allocate nothing.
package client
