package tlsconn

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"net"
)

// TLS record and handshake constants (RFC 8446 §5.1, §4).
const (
	recordHeaderBytes = 5
	recordHandshake   = 22
	recordAlert       = 21
	recordAppData     = 23
	maxPlaintext      = 1 << 14 // a record's plaintext limit

	handshakeClientHello      = 1
	handshakeServerHello      = 2
	handshakeNewSessionTicket = 4
	handshakeKeyUpdate        = 24

	// helloPrefixBytes covers a hello's record header, handshake header,
	// legacy_version and random: 5 + 4 + 2 + 32.
	helloPrefixBytes = recordHeaderBytes + 4 + 2 + randomBytes

	// ticketOverheadMax bounds a TLS 1.3 NewSessionTicket message minus
	// its ticket: handshake header 4, lifetime 4, age_add 4, nonce 1+255,
	// ticket length 2, extensions 2+8 (early_data). A ticket no longer
	// than maxPlaintext-ticketOverheadMax is therefore one record.
	ticketOverheadMax = 4 + 4 + 4 + 1 + 255 + 2 + 2 + 8
)

// handshakeConn sits between crypto/tls and the socket during the handshake.
//
// Reads: it hands crypto/tls exactly one TLS record at a time (the 5-byte
// header, then exactly the body the header announces), so when the
// handshake ends nothing past its last record has left the kernel and a
// kTLS RX socket starts at a record boundary. After the handshake, if the
// connection stays in user space, passthrough removes the extra syscall.
//
// It also captures what crypto/tls does not expose: the first hello each
// way (client and server random), the key log lines of this one
// connection (it is the KeyLogWriter of a per-connection Config), and the
// number of TLS 1.3 tickets the server wrote after its Finished (it wraps
// WrapSession), which fixes the server's first application sequence
// number. One handshakeConn per connection; crypto/tls calls it from the
// handshake goroutine only, and it is read after Handshake returns.
type handshakeConn struct {
	net.Conn // the raw *net.TCPConn

	passthrough bool
	inBody      bool
	hdrN        int // header bytes read of the current record
	bodyLeft    int // body bytes still to read of the current record
	hdr         [recordHeaderBytes]byte

	in, out   [helloPrefixBytes]byte // first bytes each way: the hellos
	inN, outN int

	// Key log capture: TLS 1.3 application traffic secrets or the TLS 1.2
	// master secret, each with the client random of its log line.
	clientSecret, serverSecret, master secretBuf
	keylogErr                          bool // a line we could not parse

	ticketCfg      *tls.Config // the Config whose ticket keys seal tickets
	ticketRecords  uint64      // TLS 1.3 records the server wrote after Finished
	ticketsUnknown bool        // a ticket did not fit one record
}

// PeerClosed passes on the transport's knowledge of the peer's close
// (CryptoConn.PeerClosed reaches the transport through here).
func (c *handshakeConn) PeerClosed() bool {
	pc, ok := c.Conn.(interface{ PeerClosed() bool })
	return ok && pc.PeerClosed()
}

type secretBuf struct {
	random [randomBytes]byte
	b      [secretBytesMax]byte
	n      int
}

func (s *secretBuf) bytes() []byte { return s.b[:s.n] }

func newHandshakeConn(raw net.Conn) *handshakeConn { return &handshakeConn{Conn: raw} }

// Read returns bytes of the current record only, never past its end.
func (r *handshakeConn) Read(p []byte) (int, error) {
	if r.passthrough {
		return r.Conn.Read(p)
	}
	want := recordHeaderBytes - r.hdrN
	if r.inBody {
		want = r.bodyLeft
	}
	if len(p) > want {
		p = p[:want]
	}
	n, err := r.Conn.Read(p)
	r.capture(&r.in, &r.inN, p[:n])
	if !r.inBody {
		copy(r.hdr[r.hdrN:], p[:n])
		r.hdrN += n
		if r.hdrN == recordHeaderBytes {
			r.hdrN = 0
			r.bodyLeft = int(r.hdr[3])<<8 | int(r.hdr[4])
			r.inBody = r.bodyLeft > 0
		}
		return n, err
	}
	r.bodyLeft -= n
	r.inBody = r.bodyLeft > 0
	return n, err
}

// Write passes through, noting the first bytes (our hello).
func (r *handshakeConn) Write(p []byte) (int, error) {
	if !r.passthrough {
		r.capture(&r.out, &r.outN, p)
	}
	return r.Conn.Write(p)
}

func (r *handshakeConn) capture(dst *[helloPrefixBytes]byte, n *int, p []byte) {
	if *n < helloPrefixBytes {
		*n += copy(dst[*n:], p)
	}
}

// helloRandom returns the random of a captured hello of type typ, if the
// capture holds one whole hello prefix in a single record.
func helloRandom(b *[helloPrefixBytes]byte, n int, typ byte) ([]byte, bool) {
	bodyLen := int(b[3])<<8 | int(b[4])
	if n < helloPrefixBytes || b[0] != recordHandshake || b[5] != typ ||
		bodyLen < helloPrefixBytes-recordHeaderBytes {
		return nil, false
	}
	return b[helloPrefixBytes-randomBytes:], true
}

// Key log labels (NSS key log format), as crypto/tls writes them.
var (
	labelClientTraffic = []byte("CLIENT_TRAFFIC_SECRET_0")
	labelServerTraffic = []byte("SERVER_TRAFFIC_SECRET_0")
	labelMaster        = []byte("CLIENT_RANDOM")
)

// Write is KeyLogWriter: "LABEL <client random hex> <secret hex>\n".
// Other labels (handshake secrets) are ignored. It never fails the
// handshake: a line it cannot parse only rules out offload.
func (r *handshakeConn) writeKeyLog(line []byte) {
	line = bytes.TrimRight(line, "\n")
	label, rest, ok1 := bytes.Cut(line, []byte{' '})
	rnd, sec, ok2 := bytes.Cut(rest, []byte{' '})
	var dst *secretBuf
	switch {
	case bytes.Equal(label, labelClientTraffic):
		dst = &r.clientSecret
	case bytes.Equal(label, labelServerTraffic):
		dst = &r.serverSecret
	case bytes.Equal(label, labelMaster):
		dst = &r.master
	default:
		return
	}
	if !ok1 || !ok2 || hex.DecodedLen(len(rnd)) != randomBytes ||
		hex.DecodedLen(len(sec)) > secretBytesMax {
		r.keylogErr = true
		return
	}
	_, err1 := hex.Decode(dst.random[:], rnd)
	n, err2 := hex.Decode(dst.b[:], sec)
	dst.n = n
	if err1 != nil || err2 != nil {
		r.keylogErr = true
	}
}

// keyLogWriter adapts handshakeConn to io.Writer without giving handshakeConn
// itself a second Write method (it is the net.Conn crypto/tls writes to).
type keyLogWriter struct{ r *handshakeConn }

func (w keyLogWriter) Write(p []byte) (int, error) {
	w.r.writeKeyLog(p)
	return len(p), nil
}

// wrapSession seals a ticket as crypto/tls would (Config.EncryptTicket
// with the shared ticket keys) and counts the TLS 1.3 ones: each is one
// NewSessionTicket record under the server's application traffic key,
// written after Finished and before Handshake returns, so the server's
// first application record has that sequence number.
func (r *handshakeConn) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	label, err := r.ticketCfg.EncryptTicket(cs, ss)
	if err != nil {
		return nil, err
	}
	if cs.Version == tls.VersionTLS13 {
		if len(label) > maxPlaintext-ticketOverheadMax {
			r.ticketsUnknown = true // may span records: do not guess
		}
		r.ticketRecords++
	}
	return label, nil
}

// wipe clears captured secrets.
func (r *handshakeConn) wipe() {
	r.clientSecret = secretBuf{}
	r.serverSecret = secretBuf{}
	r.master = secretBuf{}
}
