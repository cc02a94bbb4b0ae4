package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testpki"
	"github.com/servalproxy/serval/tlsconn"
)

// tlsSetup is a CA and a server certificate for "serval.test" and
// 127.0.0.1.
type tlsSetup struct {
	ca        *testpki.CA
	cert, key string
}

func newTLSSetup(t testing.TB) *tlsSetup {
	ca := testpki.NewCA(t, "Serval Test CA")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "serval.test", Names: []string{"serval.test", "127.0.0.1"}})
	return &tlsSetup{ca: ca, cert: cert, key: key}
}

// tlsInfoHandler answers directly with the TLS view of the request.
type tlsInfoHandler struct{}

func (tlsInfoHandler) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

func (tlsInfoHandler) OnRequest(x *serval.Exchange, _ *serval.Request, buf []byte) serval.Action {
	if !x.TLS || x.TLSInfo == nil {
		return serval.Respond(200, "text/plain", []byte("plain"))
	}
	i := x.TLSInfo
	b := append(buf[:0], "tls "...)
	b = strconv.AppendUint(b, uint64(i.Version), 16)
	b = append(b, ' ')
	b = append(b, i.ServerName...)
	b = append(b, ' ')
	b = append(b, i.ALPN...)
	b = append(b, ' ')
	b = strconv.AppendBool(b, i.Peer.Verified)
	b = append(b, ' ')
	b = append(b, i.Peer.CommonName...)
	if i.Records || i.Offloaded {
		b = append(b, " fast"...) // no crypto/tls on the record path
	}
	return serval.Respond(200, "text/plain", b)
}

// TestTLSDirect: an HTTPS client gets direct responses over one
// keep-alive connection; the hook sees the TLS description.
func TestTLSDirect(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	s, srv := startWith(t, tlsInfoHandler{}, nil, cfg)
	c, err := tls.Dial("tcp", srv.addr, tlsClientConfig(ts.ca, "serval.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(c)
	for range 3 {
		send(t, c, get("/"))
		r := readResp(t, br, "GET")
		if r.StatusCode != 200 || r.body != "tls 304 serval.test http/1.1 false  fast" {
			t.Fatalf("got %d %q", r.StatusCode, r.body)
		}
	}
	st := s.TLSStats()
	if st.HandshakesOK != 1 || st.Offloaded+st.Userspace != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTLSRefused: plaintext HTTP on the TLS port gets a 400 and a close,
// TLS 1.0/1.1 clients fail the handshake, and the server keeps serving a
// good client; failures are counted by reason.
func TestTLSRefused(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	s, srv := startWith(t, tlsInfoHandler{}, nil, cfg)

	// Any request line, whatever its method and target form (a client
	// using us as its HTTP proxy sends the absolute form).
	plain := []string{get("/"), "GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n",
		"TRACE / HTTP/1.1\r\nHost: t\r\n\r\n", "PUT http://example.test/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
		"MKCOL /d HTTP/1.1\r\nHost: t\r\n\r\n"}
	for _, req := range plain {
		c := dial(t, srv.addr)
		send(t, c, req)
		br := bufio.NewReader(c)
		r := readResp(t, br, "GET")
		if r.StatusCode != 400 || !strings.Contains(r.body, "HTTPS") {
			t.Fatalf("plaintext %.20q: got %d %q", req, r.StatusCode, r.body)
		}
		expectClosed(t, br)
	}
	// Bytes that are neither TLS nor HTTP get no answer, just the close.
	c := dial(t, srv.addr)
	send(t, c, "\x00\x01\x02\x03\x04\x05\r\n")
	expectClosed(t, bufio.NewReader(c))

	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		tc := tlsClientConfig(ts.ca, "serval.test")
		tc.MinVersion, tc.MaxVersion = v, v
		d := &net.Dialer{Timeout: testTimeout}
		if c, err := tls.DialWithDialer(d, "tcp", srv.addr, tc); err == nil {
			c.Close()
			t.Fatalf("TLS version %x accepted", v)
		}
	}
	good, err := tls.Dial("tcp", srv.addr, tlsClientConfig(ts.ca, "serval.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.SetDeadline(time.Now().Add(testTimeout))
	send(t, good, get("/"))
	if r := readResp(t, bufio.NewReader(good), "GET"); r.StatusCode != 200 {
		t.Fatalf("good client: %d", r.StatusCode)
	}
	st := waitStats(t, s, func(st tlsconn.Stats) bool {
		return st.FailedNotTLS == uint64(len(plain))+1 && st.FailedVersionCipher == 2
	})
	if st.HandshakesOK != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// waitStats polls the termination counters until ok (the server counts a
// failure after the client has seen it).
func waitStats[H serval.Handler](t testing.TB, s *Server[H], ok func(tlsconn.Stats) bool) tlsconn.Stats {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		st := s.TLSStats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLSSNI: the server picks the certificate by SNI (exact, wildcard,
// default), seen by a crypto/tls client.
func TestTLSSNI(t *testing.T) {
	ca := testpki.NewCA(t, "SNI CA")
	defCert, defKey := ca.Issue(t, testpki.Leaf{CommonName: "default", Names: []string{"default.test"}})
	aCert, aKey := ca.Issue(t, testpki.Leaf{CommonName: "a", Names: []string{"a.test"}})
	wCert, wKey := ca.Issue(t, testpki.Leaf{CommonName: "wild", Names: []string{"*.w.test"}})
	cfg := testConfig()
	cfg.TLS = &tlsconn.ServerConfig{CertFile: defCert, KeyFile: defKey,
		Certs: []tlsconn.CertPair{{CertFile: aCert, KeyFile: aKey}, {CertFile: wCert, KeyFile: wKey}}}
	_, srv := startWith(t, tlsInfoHandler{}, nil, cfg)
	for sni, want := range map[string]string{"a.test": "a", "x.w.test": "wild", "other.test": "default"} {
		tc := &tls.Config{ServerName: sni, InsecureSkipVerify: true}
		c, err := tls.Dial("tcp", srv.addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		got := c.ConnectionState().PeerCertificates[0].Subject.CommonName
		c.Close()
		if got != want {
			t.Errorf("SNI %s: certificate %q, want %q", sni, got, want)
		}
	}
	t.Run("openssl", func(t *testing.T) {
		bin, err := exec.LookPath("openssl")
		if err != nil {
			t.Skip("openssl not installed")
		}
		cmd := exec.Command(bin, "s_client", "-connect", srv.addr, "-servername", "a.test", "-CAfile", ca.File)
		cmd.Stdin = strings.NewReader("")
		cmd.WaitDelay = testTimeout
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "subject=") || !strings.Contains(string(out), "CN = a") ||
			!strings.Contains(string(out), "Verify return code: 0 (ok)") {
			t.Fatalf("openssl s_client: wrong certificate or verification:\n%s", out)
		}
	})
}

// TestTLSMutual: with ClientCAFile, a client with a good certificate is
// served and its identity reaches the hook; one without a certificate or
// with a certificate of another CA is refused.
func TestTLSMutual(t *testing.T) {
	ts := newTLSSetup(t)
	clientCA := testpki.NewCA(t, "Client CA")
	otherCA := testpki.NewCA(t, "Other CA")
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.TLS.ClientCAFile = clientCA.File
	s, srv := startWith(t, tlsInfoHandler{}, nil, cfg)

	try := func(cert *tls.Certificate) (string, error) {
		tc := tlsClientConfig(ts.ca, "serval.test")
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", srv.addr, tc)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")); err != nil {
			return "", err
		}
		// TLS 1.3: the server's verdict arrives after the client's
		// handshake, as an alert on the first read.
		b, err := io.ReadAll(c)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	good := clientCA.KeyPair(t, testpki.Leaf{CommonName: "svc-a", Client: true})
	out, err := try(&good)
	if err != nil || !strings.HasSuffix(out, "tls 304 serval.test http/1.1 true svc-a fast") {
		t.Fatalf("good client: %q %v", out, err)
	}
	if _, err := try(nil); err == nil {
		t.Fatal("client without certificate served")
	}
	wrong := otherCA.KeyPair(t, testpki.Leaf{CommonName: "intruder", Client: true})
	if _, err := try(&wrong); err == nil {
		t.Fatal("client with a certificate of another CA served")
	}
	waitStats(t, s, func(st tlsconn.Stats) bool { return st.FailedClientCert == 2 && st.HandshakesOK == 1 })
}

// TestTLSHandshakeTimeoutFreesSlot: with one slot, a TCP client that
// never speaks holds it during the handshake (a second client is turned
// away) and loses it at HandshakeTimeout; then a real client is served.
func TestTLSHandshakeTimeoutFreesSlot(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.ConnectionsMax = 1
	cfg.SlotWaitTimeout = 0 // turned away at once, not queued for the slot
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.TLS.HandshakeTimeout = 300 * time.Millisecond
	// A client silent before its ClientHello is evictable after 1s idle
	// (IdleTimeout/8): well after its handshake deadline, so a loaded
	// machine's pause cannot have it evicted for the second client.
	cfg.IdleTimeout = 8 * time.Second
	cfg.Logger = discardLogger()
	m := &closeCounter{}
	s, err := New(tlsInfoHandler{}, nil, m, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveOn(t, s)
	silent := dial(t, srv.addr)
	silentAt := time.Now() // the server's handshake deadline is after silentAt+HandshakeTimeout
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // the silent client takes the slot
	tc := tlsClientConfig(ts.ca, "serval.test")
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", srv.addr, tc); err == nil {
		c.Close()
		// Served is a failure only inside the handshake window: a loaded
		// machine that paused the test past it let the deadline free the
		// slot, which is the behaviour checked next.
		if waited := time.Since(silentAt); waited < cfg.TLS.HandshakeTimeout {
			t.Fatal("second client served while the only slot is in a handshake")
		}
		t.Logf("the handshake window passed (%v) before the second dial: its refusal not checked", time.Since(silentAt))
	}
	// The silent client is cut at the deadline: its read sees EOF.
	start := time.Now()
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got bytes")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("slot freed after %v", el)
	}
	waitStats(t, s, func(st tlsconn.Stats) bool { return st.FailedTimeout == 1 })
	deadline := time.Now().Add(testTimeout)
	for m.tlsHandshake.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// The close is counted just before the slot is free again: a dial in
	// between is turned away (SlotWaitTimeout 0), so try again, bounded.
	var c *tls.Conn
	for {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", srv.addr, tc)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("real client after the timeout: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	send(t, c, get("/"))
	if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if n := m.tlsHandshake.Load(); n != 1 {
		t.Fatalf("CloseTLSHandshake counted %d times", n)
	}
}

// TestTLSSilentClientEvicted: a TCP client that never sends its
// ClientHello waits as an idle connection does, so a real client that
// finds every slot taken evicts it and is served, long before the
// handshake timeout; OnConnectionClose is not called for the evicted one,
// which never opened.
func TestTLSSilentClientEvicted(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.ConnectionsMax = 1
	cfg.SlotWaitTimeout = 5 * time.Second
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.TLS.HandshakeTimeout = 20 * time.Second
	cfg.Logger = discardLogger()
	m := &closeCounter{}
	h := &connHookCounter{}
	s, err := New(h, nil, m, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveOn(t, s)
	silent := dial(t, srv.addr)
	defer silent.Close()
	start := time.Now()
	tc := tlsClientConfig(ts.ca, "serval.test")
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", srv.addr, tc)
	if err != nil {
		t.Fatalf("real client while a silent one holds the only slot: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	send(t, c, get("/"))
	if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("served after %v", el)
	}
	silent.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got bytes")
	}
	if n := m.evicted.Load(); n != 1 {
		t.Fatalf("%d evictions counted, want 1", n)
	}
	if o, cl := h.opened.Load(), h.closed.Load(); o != 1 || cl != 0 {
		t.Fatalf("OnConnectionOpen %d, OnConnectionClose %d: want 1 and 0 (the evicted one never opened)", o, cl)
	}
}

// connHookCounter counts OnConnectionOpen and OnConnectionClose calls.
type connHookCounter struct {
	tlsInfoHandler
	opened, closed atomic.Int64
}

func (h *connHookCounter) OnConnectionOpen(*serval.ConnInfo)  { h.opened.Add(1) }
func (h *connHookCounter) OnConnectionClose(*serval.ConnInfo) { h.closed.Add(1) }

// closeCounter counts CloseTLSHandshake closes.
type closeCounter struct {
	serval.NoopMetrics
	tlsHandshake atomic.Int64
	evicted      atomic.Int64
}

func (m *closeCounter) ConnectionClosed(r serval.CloseReason) {
	if r == serval.CloseEvicted {
		m.evicted.Add(1)
	}
	if r == serval.CloseTLSHandshake {
		m.tlsHandshake.Add(1)
	}
}

// serveOn serves s on 127.0.0.1:0 until cleanup.
func serveOn[H serval.Handler](t *testing.T, s *Server[H]) *testServer {
	t.Helper()
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// TestTLSReloadUnderLoad: clients keep opening connections while the
// certificate is replaced several times; none fails, and the new
// certificate is served afterwards. A broken file is rejected and the
// current certificate stays.
func TestTLSReloadUnderLoad(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	s, srv := startWith(t, tlsInfoHandler{}, nil, cfg)

	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := oneTLSRequest(srv.addr, tlsClientConfig(ts.ca, "serval.test")); err != nil {
					failed.Add(1)
					t.Errorf("request during reload: %v", err)
					return
				}
				ok.Add(1)
			}
		}()
	}
	var serial string
	for i := range 5 {
		time.Sleep(40 * time.Millisecond)
		cert, key := ts.ca.Issue(t, testpki.Leaf{CommonName: "gen-" + strconv.Itoa(i), Names: []string{"serval.test"}})
		copyFile(t, cert, ts.cert)
		copyFile(t, key, ts.key)
		if err := s.ReloadTLS(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		serial = "gen-" + strconv.Itoa(i)
	}
	time.Sleep(40 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 10 {
		t.Fatalf("%d ok, %d failed", ok.Load(), failed.Load())
	}
	if got := servedCN(t, srv.addr, ts.ca); got != serial {
		t.Fatalf("served %q after reload, want %q", got, serial)
	}
	if err := os.WriteFile(ts.cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("a broken certificate file was accepted")
	}
	if got := servedCN(t, srv.addr, ts.ca); got != serial {
		t.Fatalf("served %q after a rejected reload, want %q", got, serial)
	}
}

func copyFile(t testing.TB, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// oneTLSRequest makes one request on a fresh TLS connection.
func oneTLSRequest(addr string, tc *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", addr, tc)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		return &net.AddrError{Err: "bad status line " + line, Addr: addr}
	}
	return nil
}

// servedCN is the common name of the certificate the server presents.
func servedCN(t testing.TB, addr string, ca *testpki.CA) string {
	c, err := tls.Dial("tcp", addr, tlsClientConfig(ca, "serval.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}
