package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testpki"
)

// earlyConn is a client's socket that sends extra bytes along with its
// first write (the ClientHello): a client that has sent more than the
// server will read when the handshake fails.
type earlyConn struct {
	net.Conn
	extra []byte
	once  sync.Once
}

func (c *earlyConn) Write(b []byte) (int, error) {
	first := false
	c.once.Do(func() { first = true })
	if !first || c.extra == nil {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(append(append([]byte(nil), b...), c.extra...))
	return min(n, len(b)), err
}

// rawEnd reads what is left of c (the raw socket, under the TLS client)
// to its end and returns how it ended: io.EOF for a FIN.
func rawEnd(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		err = io.EOF
	}
	return err
}

// TestTLSFailedHandshakeAlertNotReset: a handshake the server refuses
// ends with the alert that says why, then a clean close, even when the
// client has sent bytes the handshake never read: a TLS 1.3 client
// without a certificate (or with one of another CA) has finished its
// side and sent its request, as curl and Go clients do; a TLS 1.2 one
// its whole last flight; a client refused for its version or ciphers
// whatever followed its ClientHello. Closing over those bytes would reset
// the connection, failing the request's write ("connection reset by
// peer") or destroying the alert. The client must see the alert, its
// writes must succeed, and the socket must end with a FIN, not a reset.
func TestTLSFailedHandshakeAlertNotReset(t *testing.T) {
	ts := newTLSSetup(t)
	clientCA := testpki.NewCA(t, "Client CA")
	otherCA := testpki.NewCA(t, "Other CA")
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.TLS.ClientCAFile = clientCA.File
	_, srv := startWith(t, tlsInfoHandler{}, nil, cfg)
	wrong := otherCA.KeyPair(t, testpki.Leaf{CommonName: "intruder", Client: true})
	good := clientCA.KeyPair(t, testpki.Leaf{CommonName: "svc", Client: true})
	const req = "GET / HTTP/1.1\r\nHost: serval.test\r\nConnection: close\r\n\r\n"
	// An application data record's worth of bytes behind the ClientHello.
	early := append([]byte{23, 3, 3, 0, 64}, make([]byte, 64)...)

	for _, c := range []struct {
		name     string
		version  uint16
		cert     *tls.Certificate // sent whatever CAs the server names
		suites   []uint16
		extra    []byte
		alert    string
		postHand bool // TLS 1.3: the verdict comes after the client's handshake
	}{
		{name: "TLS 1.3 no client certificate", version: tls.VersionTLS13, alert: "certificate required", postHand: true},
		{name: "TLS 1.3 untrusted client certificate", version: tls.VersionTLS13, cert: &wrong, alert: "unknown certificate authority", postHand: true},
		{name: "TLS 1.2 no client certificate", version: tls.VersionTLS12, alert: "handshake failure"},
		{name: "TLS 1.2 untrusted client certificate", version: tls.VersionTLS12, cert: &wrong, alert: "unknown certificate authority"},
		{name: "TLS 1.1", version: tls.VersionTLS11, cert: &good, extra: early, alert: "protocol version not supported"},
		{name: "no common cipher suite", version: tls.VersionTLS12, cert: &good, extra: early, alert: "handshake failure",
			suites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := dial(t, srv.addr)
			tc := tlsClientConfig(ts.ca, "serval.test")
			tc.MinVersion, tc.MaxVersion, tc.CipherSuites = c.version, c.version, c.suites
			if c.cert != nil {
				tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cert, nil }
			}
			tlsc := tls.Client(&earlyConn{Conn: raw, extra: c.extra}, tc)
			err := tlsc.Handshake()
			if c.postHand {
				if err != nil {
					t.Fatalf("TLS 1.3 client handshake: %v", err)
				}
				// As curl does: the request goes out at once, then the
				// client reads.
				if _, err := io.WriteString(tlsc, req); err != nil {
					t.Fatalf("the request's write: %v; want it to succeed (the server reads it off before closing)", err)
				}
				_, err = io.ReadAll(tlsc)
			}
			if err == nil || !strings.Contains(err.Error(), c.alert) {
				t.Fatalf("client error %v, want the %q alert", err, c.alert)
			}
			if err := rawEnd(raw); err != io.EOF {
				t.Fatalf("after the alert: %v; want EOF (a staged close), not a reset", err)
			}
		})
	}

	// Plain HTTP with a body larger than one read: the 400, then EOF.
	t.Run("plaintext with a body", func(t *testing.T) {
		c := dial(t, srv.addr)
		body := strings.Repeat("x", 64<<10)
		send(t, c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n"+body)
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.StatusCode != 400 {
			t.Fatalf("status %d", r.StatusCode)
		}
		if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
			t.Fatalf("after the 400: %q, %v; want EOF, not a reset", b, err)
		}
	})
}

// failHandshake13 runs a TLS 1.3 handshake without a client certificate
// against an mTLS server and returns the raw socket, the alert on its
// way: the server lingers on it.
func failHandshake13(t *testing.T, addr string, ca *testpki.CA) net.Conn {
	t.Helper()
	raw := dial(t, addr)
	tc := tlsClientConfig(ca, "serval.test")
	tc.MinVersion = tls.VersionTLS13
	if err := tls.Client(raw, tc).Handshake(); err != nil {
		t.Fatalf("TLS 1.3 client handshake: %v", err)
	}
	return raw
}

// writeUntilCut writes chunks of n bytes to c every pause until a write
// fails, and returns when (since start) and with what error.
func writeUntilCut(c net.Conn, n int, pause time.Duration, start time.Time) (time.Duration, error) {
	chunk := make([]byte, n)
	for time.Since(start) < testTimeout {
		if _, err := c.Write(chunk); err != nil {
			return time.Since(start), err
		}
		time.Sleep(pause)
	}
	return time.Since(start), nil
}

// TestTLSFailedHandshakeLingerBounded: the staged close after a failed
// handshake is bounded: in time (handshakeLingerMax), never past the
// handshake timeout, and in bytes; and the lingering slot is the first a
// new connection takes.
func TestTLSFailedHandshakeLingerBounded(t *testing.T) {
	ts := newTLSSetup(t)
	clientCA := testpki.NewCA(t, "Client CA")
	good := clientCA.KeyPair(t, testpki.Leaf{CommonName: "svc", Client: true})
	cutOff := func(err error) bool {
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	setup := func(t *testing.T, handshakeTimeout time.Duration, slots int) (*testServer, *Server[tlsInfoHandler]) {
		cfg := testConfig()
		cfg.TLS = serverTLS(ts.cert, ts.key)
		cfg.TLS.ClientCAFile = clientCA.File
		cfg.TLS.HandshakeTimeout = handshakeTimeout
		cfg.ConnectionsMax = slots
		cfg.SlotWaitTimeout = 0
		s, srv := startWith(t, tlsInfoHandler{}, nil, cfg)
		return srv, s
	}

	t.Run("time", func(t *testing.T) {
		srv, _ := setup(t, 5*time.Second, 4)
		start := time.Now()
		raw := failHandshake13(t, srv.addr, ts.ca)
		d, err := writeUntilCut(raw, 100, 20*time.Millisecond, start)
		if !cutOff(err) {
			t.Fatalf("still writing after %v (%v): the linger is not bounded", d, err)
		}
		if d < handshakeLingerMax/2 || d > handshakeLingerMax+time.Second {
			t.Fatalf("cut off after %v, want about %v", d, handshakeLingerMax)
		}
	})
	t.Run("handshake timeout", func(t *testing.T) {
		const hs = 250 * time.Millisecond
		srv, _ := setup(t, hs, 4)
		start := time.Now()
		raw := failHandshake13(t, srv.addr, ts.ca)
		d, err := writeUntilCut(raw, 100, 10*time.Millisecond, start)
		if !cutOff(err) || d > hs+200*time.Millisecond {
			t.Fatalf("cut off after %v (%v): want the handshake timeout (%v) to bound the linger", d, err, hs)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		srv, _ := setup(t, 5*time.Second, 4)
		start := time.Now()
		raw := failHandshake13(t, srv.addr, ts.ca)
		d, err := writeUntilCut(raw, 64<<10, 0, start)
		if !cutOff(err) || d >= handshakeLingerMax {
			t.Fatalf("cut off after %v (%v): want the byte bound (%d) to end the linger first", d, err, handshakeLingerBytesMax)
		}
	})
	t.Run("evicted", func(t *testing.T) {
		// One slot, and no waiting for it: a new connection finding it
		// busy would be refused.
		srv, s := setup(t, 5*time.Second, 1)
		raw := failHandshake13(t, srv.addr, ts.ca) // stays open: the server lingers
		// The lingering slot counts as idle (a busy one would only come
		// back free, at the linger's end).
		for deadline := time.Now().Add(testTimeout); s.slots[0].state.Load() != stIdle; {
			if st := s.slots[0].state.Load(); st == stFree || time.Now().After(deadline) {
				t.Fatalf("slot state %d: the failed handshake's linger is not idle", st)
			}
			time.Sleep(time.Millisecond)
		}
		begin := time.Now()
		cut := make(chan time.Duration, 1)
		go func() {
			d, _ := writeUntilCut(raw, 1, 5*time.Millisecond, begin)
			cut <- d
		}()
		tc := tlsClientConfig(ts.ca, "serval.test")
		tc.Certificates = []tls.Certificate{good}
		if err := oneTLSRequest(srv.addr, tc); err != nil {
			t.Fatalf("next client: %v", err)
		}
		// The lingering connection gave its slot up when the next one
		// came (its close is what ends the writes), not at the end of the
		// linger.
		if d := <-cut; d >= handshakeLingerMax/2 {
			t.Fatalf("the lingering connection was closed after %v: the next one waited for the linger to end", d)
		}
	})
}

// TestTLSUnservedALPNNotReset: a protocol the server advertises but does
// not serve (ALPN "h2" here) ends the connection right after the
// handshake; the client has already sent its first bytes (its HTTP/2
// preface) and reads a clean end of stream, not a reset.
func TestTLSUnservedALPNNotReset(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.TLS.ALPN = []string{"h2", "http/1.1"}
	_, srv := startWith(t, tlsInfoHandler{}, nil, cfg)
	raw := dial(t, srv.addr)
	tc := tlsClientConfig(ts.ca, "serval.test")
	tc.NextProtos = []string{"h2"}
	c := tls.Client(raw, tc)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatalf("the preface's write: %v", err)
	}
	if b, err := io.ReadAll(c); err != nil || len(b) > 0 {
		t.Fatalf("read %q, %v; want close_notify", b, err)
	}
	if err := rawEnd(raw); err != io.EOF {
		t.Fatalf("after close_notify: %v; want EOF (a staged close), not a reset", err)
	}
}
