package server

import (
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/sockio"
	"github.com/servalproxy/serval/internal/testpki"
	"github.com/servalproxy/serval/tlsconn"
)

// originPKI is a CA and an origin certificate for "origin.test" and
// 127.0.0.1.
type originPKI struct {
	ca *testpki.CA
	tc *tls.Config
}

func newOriginPKI(t testing.TB, names ...string) *originPKI {
	ca := testpki.NewCA(t, "Origin CA")
	if len(names) == 0 {
		names = []string{"origin.test", "127.0.0.1"}
	}
	cert := ca.KeyPair(t, testpki.Leaf{CommonName: names[0], Names: names})
	return &originPKI{ca: ca, tc: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
}

// bigBody is the large body size: 16 MiB, less under the race detector
// (where crypto is tens of times slower).
func bigBody() int {
	if raceEnabled {
		return 4 << 20
	}
	return 16 << 20
}

// TestTLSProxy: every combination of HTTP/HTTPS towards the client and
// towards the origin, and a mixed pair of origins behind one server,
// carries large Content-Length and chunked bodies both ways byte for byte
// (sha256), over pooled keep-alive connections.
func TestTLSProxy(t *testing.T) {
	front := newTLSSetup(t)
	opki := newOriginPKI(t)
	plainHost, plainPort := startOrigin(t, nil)
	tlsHost, tlsPort := startOrigin(t, opki.tc)
	plain := serval.NewUpstream(plainHost, plainPort, 0)
	secure := serval.NewUpstream(tlsHost, tlsPort, 1)
	secure.TLS, secure.ServerName = true, "origin.test"

	for _, tc := range []struct {
		name       string
		frontTLS   bool
		ups        []serval.Upstream
		paths      []string
		wantUpDone int
	}{
		{"https-http", true, []serval.Upstream{plain}, []string{"/0/"}, 0},
		{"http-https", false, []serval.Upstream{plain, secure}, []string{"/1/"}, 0},
		{"https-https", true, []serval.Upstream{plain, secure}, []string{"/1/"}, 0},
		{"https-mixed", true, []serval.Upstream{plain, secure}, []string{"/0/", "/1/"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Proxy.UpstreamTLS = tlsconn.ClientConfig{CAFile: opki.ca.File}
			scheme := "http://"
			var clientTLS *tls.Config
			if tc.frontTLS {
				cfg.TLS = serverTLS(front.cert, front.key)
				scheme, clientTLS = "https://", tlsClientConfig(front.ca, "serval.test")
			}
			h := &router{ups: tc.ups}
			s, srv := startWith(t, h, testPool(t, 2), cfg)
			if err := s.PrepareUpstreams(h.ups); err != nil {
				t.Fatal(err)
			}
			c := httpClient(t, clientTLS)
			big := bigBody()
			for _, p := range tc.paths {
				url := scheme + srv.addr + p + "x"
				r := exchange(t, c, url, big, big, false, false)
				if want := map[bool]string{true: "https", false: "http"}[tc.frontTLS]; r.Header.Get("X-Proto") != want {
					t.Fatalf("X-Forwarded-Proto %q, want %q", r.Header.Get("X-Proto"), want)
				}
				exchange(t, c, url, 3<<20+17, 5<<20+3, true, true)
				exchange(t, c, url, 0, 100, false, false)
				exchange(t, c, url, 1000, 0, true, false)
			}
			isTLS, info := h.seen()
			if isTLS != tc.frontTLS || tc.frontTLS && (info.ServerName != "serval.test" || info.ALPN != "http/1.1") {
				t.Fatalf("hook saw TLS=%v %+v", isTLS, info)
			}
			ust := s.UpstreamTLSStats()
			usesTLS := len(tc.ups) > 1
			if usesTLS && (ust.HandshakesOK == 0 || ust.HandshakesOK > 2) || !usesTLS && ust.HandshakesOK != 0 {
				t.Fatalf("upstream TLS stats %+v (pooled connections should be reused)", ust)
			}
		})
	}
}

// logRouter is a router that records the phase and error of each log.
type logRouter struct {
	router
	mu     sync.Mutex
	phases []serval.Phase
	errs   []string
}

func (h *logRouter) OnLog(_ *serval.Exchange, e *serval.LogEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.phases = append(h.phases, e.Phase)
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	h.errs = append(h.errs, msg)
}

// logN waits for the n-th log (OnLog runs after the response was sent,
// so the client may see the response first) and returns it.
func (h *logRouter) logN(t testing.TB, n int) (serval.Phase, string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		h.mu.Lock()
		if len(h.phases) >= n {
			defer h.mu.Unlock()
			return h.phases[n-1], h.errs[n-1]
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("log %d never came", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestTLSUpstreamVerification: an origin whose certificate is signed by
// an unknown CA, or names another host, is refused (502, phase connect)
// unless InsecureSkipVerify; a handshake that never completes is a 504.
func TestTLSUpstreamVerification(t *testing.T) {
	trusted := newOriginPKI(t)
	wrongName := newOriginPKI(t, "other.test")
	untrusted := newOriginPKI(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})
	mk := func(pki *originPKI, idx int) serval.Upstream {
		host, port := startOrigin(t, pki.tc)
		u := serval.NewUpstream(host, port, serval.UpstreamIndex(idx))
		u.TLS, u.ServerName = true, "origin.test"
		return u
	}
	ups := []serval.Upstream{mk(trusted, 0), mk(wrongName, 1), mk(untrusted, 2)}
	sp := silent.Addr().(*net.TCPAddr).AddrPort()
	ups = append(ups, serval.NewUpstream("127.0.0.1", sp.Port(), 3))
	ups[3].TLS = true

	for _, insecure := range []bool{false, true} {
		t.Run("insecure="+strconv.FormatBool(insecure), func(t *testing.T) {
			cfg := testConfig()
			cfg.Proxy.UpstreamTLS = tlsconn.ClientConfig{CAFile: trusted.ca.File, InsecureSkipVerify: insecure}
			cfg.Proxy.ConnectTimeout = 300 * time.Millisecond
			h := &logRouter{router: router{ups: ups}}
			_, srv := startWith(t, h, nil, cfg)
			c := httpClient(t, nil)
			want := []int{200, 502, 502, 504}
			if insecure {
				want = []int{200, 200, 200, 504}
			}
			for i, code := range want {
				resp, err := c.Get("http://" + srv.addr + "/" + strconv.Itoa(i) + "/?len=10")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != code {
					t.Fatalf("upstream %d: status %d, want %d", i, resp.StatusCode, code)
				}
				phase, msg := h.logN(t, i+1)
				if code != 200 && phase != serval.PhaseConnect {
					t.Fatalf("upstream %d: phase %v (%s), want connect", i, phase, msg)
				}
				if code == 502 && !insecure && !containsAny(msg, "certificate", "x509") {
					t.Fatalf("upstream %d: error %q does not say why", i, msg)
				}
			}
		})
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
	}
	return false
}

// TestTLSUpstreamResumption: without a pool every request dials; the
// second dial to the same TLS upstream resumes the session.
func TestTLSUpstreamResumption(t *testing.T) {
	opki := newOriginPKI(t)
	var full, resumed atomic.Int64
	opki.tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			resumed.Add(1)
		} else {
			full.Add(1)
		}
		return nil
	}
	// Resumption and kernel TLS do not combine on the client side (see
	// tlsconn); ModeOff keeps the test the same on a kTLS kernel.
	h, cfg := userspaceTLSOrigin(t, opki)
	s, srv := startWith(t, h, nil, cfg)
	c := httpClient(t, nil)
	for range 3 {
		resp, err := c.Get("http://" + srv.addr + "/0/?len=1000")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if full.Load() != 1 || resumed.Load() != 2 {
		t.Fatalf("%d full handshakes, %d resumed; want 1 and 2", full.Load(), resumed.Load())
	}
	if st := s.UpstreamTLSStats(); st.HandshakesOK != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTLSUpstreamSocketUnregistered: an upstream TLS connection in user
// space reads its records through the polled socket its handshake used,
// and closing it takes that socket out of the readiness poller: once the
// connections are closed, nothing stays registered for them.
func TestTLSUpstreamSocketUnregistered(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("no readiness poller in this build (race detector, or not Linux)")
	}
	h, cfg := userspaceTLSOrigin(t, newOriginPKI(t))
	s, srv := startWith(t, h, nil, cfg) // no pool: every request dials, then closes
	before := sockio.Registered()       // earlier tests' sockets may still be leaving
	c := httpClient(t, nil)
	for range 6 {
		resp, err := c.Get("http://" + srv.addr + "/0/?len=1000")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if st := s.UpstreamTLSStats(); st.Userspace != 6 {
		t.Fatalf("stats %+v: want 6 connections in user space", st)
	}
	c.CloseIdleConnections()
	// Connections close after their responses went out: wait (bounded).
	deadline := time.Now().Add(5 * time.Second)
	for sockio.Registered() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := sockio.Registered(); n > before {
		t.Fatalf("%d sockets registered after the connections closed, %d before them", n, before)
	}
}

// userspaceTLSOrigin starts an HTTPS origin with opki's configuration and
// returns a router to it and a server configuration that originates TLS
// to it in user space (tlsconn.ModeOff), verified against opki's CA.
func userspaceTLSOrigin(t *testing.T, opki *originPKI) (*router, Config) {
	t.Helper()
	host, port := startOrigin(t, opki.tc)
	up := serval.NewUpstream(host, port, 0)
	up.TLS, up.ServerName = true, "origin.test"
	cfg := testConfig()
	cfg.Proxy.UpstreamTLS = tlsconn.ClientConfig{CAFile: opki.ca.File, Mode: tlsconn.ModeOff}
	return &router{ups: []serval.Upstream{up}}, cfg
}
