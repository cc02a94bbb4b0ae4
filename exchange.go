package serval

import (
	"crypto/x509"
	"io"
	"net/netip"
	"time"
)

// Exchange is the per-request context: what a hook needs to know about
// the request beyond its head, and what the handler wants done with it.
// One Exchange per connection slot, reset for every request; hooks must
// not keep it after they return.
type Exchange struct {
	// ID is unique per server process; ConnID per connection;
	// RequestIndex counts requests on the connection from 0.
	ID           uint64
	ConnID       uint64
	RequestIndex uint32

	// ClientAddr is the peer of the client connection; LocalAddr our
	// side of it.
	ClientAddr netip.AddrPort
	LocalAddr  netip.AddrPort
	// TLS is true when the client connection is TLS-terminated.
	TLS bool
	// TLSInfo describes the client's TLS connection (version, SNI, ALPN,
	// the verified client certificate under mTLS); nil on plain
	// connections. It is computed once per connection and owned by the
	// server: read it, never modify or keep it.
	TLSInfo *TLSInfo

	// Start is when the request head was complete; for a head refused
	// after it took more than one read (408 at the header deadline, 431,
	// ...), when the server began waiting for its rest.
	Start time.Time

	// Upstream is the upstream chosen for this request (set by the server
	// after SelectUpstream), nil for direct responses.
	Upstream *Upstream
	// RewritePath, when non-nil, is sent upstream instead of the request
	// path (the query is kept: it is appended). It must start with '/' and
	// hold no '?' (nor a space, control or 8-bit byte); any other is
	// answered 500. To change the query, set Outbound.Path in
	// OnUpstreamRequest. A handler sets it in OnRequest or SelectUpstream,
	// typically to a slice of PathBuf.
	RewritePath []byte
	// PathBuf is scratch space of PathBytesMax bytes for building
	// RewritePath without allocating.
	PathBuf []byte

	// Body reads the request body (Content-Length or chunked, de-framed)
	// for handlers that answer directly. Reading past the server's body
	// limit returns a *StatusError with 413. A body read here is consumed:
	// returning Continue after reading it answers 500. A request
	// without a body has an empty one (Read returns io.EOF at once), never
	// nil, as in net/http's server. Read into the buf OnRequest receives (or other
	// memory made at startup): a local array passed to Read escapes to the
	// heap, one allocation per request.
	Body io.Reader

	// Draining is closed when the server begins its graceful shutdown
	// (the context given to Serve is done). A long stream (an SSE feed
	// through Stream and NextChunk) should watch it where it waits and
	// end itself, with whatever tells its client to come back (an SSE
	// "retry:" field, say), rather than be cut at ShutdownTimeout. The
	// same channel for every request of one Serve; nil outside a server.
	Draining <-chan struct{}

	// User is the handler's own value; the server clears it per request.
	User any

	// Timings and counters, filled as the exchange runs.
	Timings Timings
	// BytesIn counts request bytes read from the client (head and body);
	// BytesOut response bytes written to the client.
	BytesIn  int64
	BytesOut int64
	// Status is the status sent to the client (0 until sent).
	Status int
	// Reused is true when the upstream connection came from the pool.
	Reused bool
	// Attempts counts upstream attempts (retries included).
	Attempts uint8

	// Span is the tracer's handle for this request.
	Span SpanHandle
}

// Timings are the durations of an exchange's phases, measured from Start.
type Timings struct {
	Queue     time.Duration // head complete to upstream selected
	Connect   time.Duration // time spent dialling upstream connections, over every attempt (0 when none was dialled: pooled)
	FirstByte time.Duration // head complete to the first response byte from upstream
	Total     time.Duration // head complete to the last byte sent to the client (kept back for a pipelined batch: to the response complete in the write buffer)
}

// Reset clears the exchange for the next request, keeping buffers.
func (x *Exchange) Reset() {
	pb := x.PathBuf
	connID, client, local, tls, ti := x.ConnID, x.ClientAddr, x.LocalAddr, x.TLS, x.TLSInfo
	*x = Exchange{PathBuf: pb, ConnID: connID, ClientAddr: client, LocalAddr: local, TLS: tls, TLSInfo: ti}
}

// TLSInfo describes a TLS-terminated client connection. The server fills
// it once, when the handshake ends, from the TLS layer's view of the
// connection; requests on that connection see the same value, so reading
// it never allocates. Slices and Leaf alias the parsed certificate.
type TLSInfo struct {
	Version     uint16 // tls.VersionTLS12 or tls.VersionTLS13
	CipherSuite uint16
	// ServerName is the SNI the client sent ("" when none).
	ServerName string
	// ALPN is the negotiated application protocol ("" when none).
	ALPN string
	// Resumed is true for a resumed session (no full handshake).
	Resumed bool
	// Offloaded is true when the kernel encrypts and decrypts the
	// connection's records (kernel TLS); false in user space.
	Offloaded bool
	// Records is true when Serval's own allocation-free record layer
	// (tlsconn.RecordConn) carries the records in user space; false for
	// kernel TLS or crypto/tls.
	Records bool
	// Peer is the client certificate's identity (mTLS); zero when the
	// client sent none.
	Peer PeerInfo
}

// PeerInfo is the identity in a peer's leaf certificate.
type PeerInfo struct {
	// Verified is true when the certificate chain verified against the
	// configured client CA roots. Trust the other fields only when it is.
	Verified bool
	// Subject is the RFC 2253 form of the leaf's subject, CommonName its
	// CN.
	Subject    string
	CommonName string
	// DNSNames, EmailAddresses and URIs (e.g. SPIFFE IDs) are the leaf's
	// subject alternative names.
	DNSNames       []string
	EmailAddresses []string
	URIs           []string
	// Leaf is the parsed certificate, for anything else.
	Leaf *x509.Certificate
}

// Outbound is the request head the proxy sends upstream, built from the
// inbound Request after hop-by-hop fields are removed and X-Forwarded-*
// added. OnUpstreamRequest may edit it: change Fields in place, Add fields
// up to its capacity, Del fields, or set Path.
type Outbound struct {
	Method []byte
	// Path is the path and query to send: origin form ("/" first), or
	// "*" for OPTIONS; any other is answered 500.
	Path   []byte
	Fields []Header
}

// Add appends a field; false when the field table is full.
func (o *Outbound) Add(name, value []byte) bool {
	if len(o.Fields) == cap(o.Fields) {
		return false
	}
	o.Fields = append(o.Fields, Header{Name: name, Value: value})
	return true
}

// Del removes every field named name (ASCII case-insensitive), keeping
// the order of the others.
func (o *Outbound) Del(name string) {
	kept := o.Fields[:0]
	for _, f := range o.Fields {
		if !EqualFold(f.Name, name) {
			kept = append(kept, f)
		}
	}
	o.Fields = kept
}

// Get returns the first field named name, or nil.
func (o *Outbound) Get(name string) []byte { return getField(o.Fields, name) }
