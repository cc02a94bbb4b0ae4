package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testpki"
	"github.com/servalproxy/serval/tlsconn"
)

// loopbackNames are the names test certificates cover.
var loopbackNames = []string{"127.0.0.1", "localhost"}

// httpsClient returns a client trusting roots and presenting certs.
func httpsClient(t *testing.T, roots *x509.CertPool, certs ...tls.Certificate) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get GETs url and returns the status, the backend id and the TLS state.
func get(t *testing.T, c *http.Client, url string) (int, string, *tls.ConnectionState) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend-Id"), resp.TLS
}

// waitLog waits (bounded) until the logs contain want n times.
func waitLog(t *testing.T, logs *syncBuffer, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("logs do not contain %q %d times within 5s:\n%s", want, n, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHTTPSTermination: with --cert/--key the balancer speaks HTTPS with
// that certificate (a crypto/tls client verifies it against its CA),
// proxies to the plain in-process backends, and logs the kernel TLS
// verdict at startup (offload, or the fallback to user space).
func TestHTTPSTermination(t *testing.T) {
	ca := testpki.NewCA(t, "lb-test-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, logs := startLB(t, "--cert", cert, "--key", key)
	c := httpsClient(t, ca.Pool())
	seen := map[string]bool{}
	for i := range 4 {
		code, id, st := get(t, c, "https://"+addr+"/")
		if code != 200 || st == nil || !st.HandshakeComplete {
			t.Fatalf("request %d: status %d, TLS %v", i, code, st != nil)
		}
		seen[id] = true
	}
	if !seen["backend-1"] || !seen["backend-2"] {
		t.Errorf("backends seen %v, want both", seen)
	}
	if ok, _ := tlsconn.Probe(); ok {
		waitLog(t, logs, "kernel TLS available", 1)
	} else {
		waitLog(t, logs, "TLS stays in user space", 1)
	}
	// Plain HTTP to the HTTPS port is refused with a 400, not proxied.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("plain HTTP to the HTTPS port: status %d, want 400", resp.StatusCode)
		}
	}
}

// TestMTLS: with --client-ca a client without a certificate is refused
// at the handshake and one with a certificate from that CA gets through.
func TestMTLS(t *testing.T) {
	ca := testpki.NewCA(t, "lb-mtls-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, _ := startLB(t, "--cert", cert, "--key", key, "--client-ca", ca.File)
	if resp, err := httpsClient(t, ca.Pool()).Get("https://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: status %d, want a handshake failure", resp.StatusCode)
	}
	client := ca.KeyPair(t, testpki.Leaf{CommonName: "client-1", Client: true})
	if code, _, _ := get(t, httpsClient(t, ca.Pool(), client), "https://"+addr+"/"); code != 200 {
		t.Fatalf("with a client certificate: status %d", code)
	}
}

// TestClientCertHeader: with --client-cert-header the backend learns the
// verified client certificate (its SHA-256 and subject), and a client
// cannot write that field itself.
func TestClientCertHeader(t *testing.T) {
	ca := testpki.NewCA(t, "lb-xfcc-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, _ := startLB(t, "--cert", cert, "--key", key, "--client-ca", ca.File, "--client-cert-header", "X-Client-Cert")
	client := ca.KeyPair(t, testpki.Leaf{CommonName: "client-7", Names: []string{"client-7.example"}, Client: true})
	sum := sha256.Sum256(client.Certificate[0])
	want := "X-Client-Cert: Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=client-7,O=Serval Test";DNS=client-7.example`
	// Requests 0 and 1 share a connection (both backends); request 2 is
	// on a new connection that resumes the TLS session: the identity
	// comes with the session.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 3 {
		if i == 2 {
			tr.CloseIdleConnections()
		}
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		req.Header.Set("X-Client-Cert", "Hash=spoof")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want+"\n") || strings.Contains(string(body), "spoof") {
			t.Errorf("request %d (resumed %v): the backend saw\n%s\nwant the line %q and no spoofed value", i, resp.TLS.DidResume, body, want)
		}
		if i == 2 && !resp.TLS.DidResume {
			t.Errorf("the third connection did not resume its session: the test no longer covers resumption")
		}
	}
	for _, name := range []string{"X-Forwarded-For", "Connection", "bad name"} {
		if _, code, ok := parseFlags([]string{"--client-cert-header", name}, io.Discard); ok || code != 2 {
			t.Errorf("--client-cert-header %q: ok %v exit %d, want a usage error", name, ok, code)
		}
	}
}

// copyFile copies src over dst (a certificate rotation in place).
func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadTLS: a reload (SIGHUP in main, the hup channel here) makes
// new connections see the certificate now in the files; a broken file is
// rejected, logged, and the current certificate stays in use.
func TestReloadTLS(t *testing.T) {
	ca := testpki.NewCA(t, "lb-reload-ca")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := ca.Issue(t, testpki.Leaf{CommonName: "first", Names: loopbackNames})
	c2, k2 := ca.Issue(t, testpki.Leaf{CommonName: "second", Names: loopbackNames})
	copyFile(t, cert, c1)
	copyFile(t, key, k1)
	hup := make(chan os.Signal, 1)
	addr, logs := startLBWith(t, hup, "--cert", cert, "--key", key)
	leafCN := func() string {
		t.Helper()
		// A fresh client per check: a new connection, a new handshake.
		_, _, st := get(t, httpsClient(t, ca.Pool()), "https://"+addr+"/")
		return st.PeerCertificates[0].Subject.CommonName
	}
	if cn := leafCN(); cn != "first" {
		t.Fatalf("leaf %q before reload, want first", cn)
	}
	copyFile(t, cert, c2)
	copyFile(t, key, k2)
	hup <- syscall.SIGHUP
	waitLog(t, logs, `msg="server: TLS certificate reloaded" file=`+cert+" cn=second", 1)
	if cn := leafCN(); cn != "second" {
		t.Fatalf("leaf %q after reload, want second", cn)
	}
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	waitLog(t, logs, "server: TLS reload rejected", 1)
	if cn := leafCN(); cn != "second" {
		t.Fatalf("leaf %q after a rejected reload, want second", cn)
	}
}

// TestKTLSRequire: --ktls require on a kernel without TLS offload fails
// at startup instead of serving connections that would all fail.
func TestKTLSRequire(t *testing.T) {
	if ok, _ := tlsconn.Probe(); ok {
		t.Skip("this kernel offloads TLS; require starts normally")
	}
	ca := testpki.NewCA(t, "lb-ktls-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	var out syncBuffer
	args := []string{"--port", "0", "--max-conns", "8", "--cert", cert, "--key", key, "--ktls", "require"}
	if code := run(context.Background(), args, &out); code != 1 {
		t.Fatalf("exit %d, want 1; logs:\n%s", code, out.String())
	}
	if s := out.String(); !strings.Contains(s, "kernel TLS is required") || strings.Contains(s, "stays in user space") {
		t.Errorf("no clear reason logged:\n%s", s)
	}
}

// startHTTPSEcho starts one HTTPS echo backend with a certificate from ca
// and returns its address; it stops with the test.
func startHTTPSEcho(t *testing.T, ca *testpki.CA, id string) string {
	t.Helper()
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: id, Names: loopbackNames})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	addr, err := startEchoBackendsTLS(ctx, &wg, discardLogger(), &tlsconn.ServerConfig{CertFile: cert, KeyFile: key}, echoBackendConnectionsMax, id)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestUpstreamTLS: --upstream-tls originates HTTPS to the named backend,
// verified with --upstream-ca or not at all with --insecure-skip-verify
// (with a loud warning); an untrusted backend gets 502 without them. The
// probes use HTTPS too: a plain HTTP probe to the HTTPS port would be
// answered 400 and take the backend out (503s).
func TestUpstreamTLS(t *testing.T) {
	ca := testpki.NewCA(t, "upstream-ca")
	be := startHTTPSEcho(t, ca, "secure-1")
	// The timeout is capped at the interval: at 20 ms, three TLS
	// handshakes slowed by a loaded machine (-race) took the backend out.
	probes := []string{"--health-interval", "200ms", "--health-timeout", "1s"}
	cases := []struct {
		name     string
		args     []string
		want     int
		wantLogs string
	}{
		{"ca", []string{"--upstream-ca", ca.File}, 200, ""},
		{"ca+server-name", []string{"--upstream-ca", ca.File, "--upstream-server-name", "localhost"}, 200, ""},
		{"insecure", []string{"--insecure-skip-verify"}, 200, "--insecure-skip-verify: HTTPS backends' certificates are NOT verified"},
		{"untrusted", nil, 502, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--backends", be, "--upstream-tls", be}, tc.args...)
			if tc.want == 200 {
				args = append(args, probes...)
			}
			addr, logs := startLB(t, args...)
			c := &http.Client{Timeout: 10 * time.Second}
			code, id, _ := get(t, c, "http://"+addr+"/")
			if code != tc.want || (code == 200 && id != "secure-1") {
				t.Fatalf("status %d from %q, want %d; logs:\n%s", code, id, tc.want, logs)
			}
			if tc.wantLogs != "" {
				waitLog(t, logs, tc.wantLogs, 1)
			}
			if tc.want != 200 {
				return
			}
			// Many probe intervals later the backend is still healthy.
			time.Sleep(time.Second)
			if code, _, _ := get(t, c, "http://"+addr+"/"); code != 200 {
				t.Fatalf("after probes: status %d; logs:\n%s", code, logs)
			}
			if strings.Contains(logs.String(), "prober: upstream unhealthy") {
				t.Errorf("HTTPS probes failed:\n%s", logs)
			}
		})
	}
}

// TestUpstreamTLSEndToEnd: HTTPS on both sides (terminate, then
// originate to an HTTPS backend).
func TestUpstreamTLSEndToEnd(t *testing.T) {
	ca := testpki.NewCA(t, "e2e-ca")
	be := startHTTPSEcho(t, ca, "secure-2")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, _ := startLB(t, "--cert", cert, "--key", key, "--backends", be, "--upstream-tls", be, "--upstream-ca", ca.File)
	if code, id, _ := get(t, httpsClient(t, ca.Pool()), "https://"+addr+"/"); code != 200 || id != "secure-2" {
		t.Fatalf("status %d from %q", code, id)
	}
}

// TestTLSMetrics: with --metrics-addr and --cert, the TLS counters are
// exported: handshakes by result (a plain HTTP request to the HTTPS port
// is a not_tls failure) and connections by record path.
func TestTLSMetrics(t *testing.T) {
	ca := testpki.NewCA(t, "lb-metrics-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, logs := startLB(t, "--cert", cert, "--key", key, "--metrics-addr", "127.0.0.1:0")
	maddr := metricsAddr(t, logs)
	if code, _, _ := get(t, httpsClient(t, ca.Pool()), "https://"+addr+"/"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
	}
	var text string
	deadline := time.Now().Add(5 * time.Second)
	for {
		text = scrape(t, maddr)
		if sumSeries(text, "serval_tls_handshakes_total") >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{
		`serval_tls_handshakes_total{result="ok",side="termination"} 1`,
		`serval_tls_handshakes_total{result="not_tls",side="termination"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %s in:\n%s", want, text)
		}
	}
	if got := sumSeries(text, "serval_tls_connections_total"); got != 1 {
		t.Errorf("tls connections %v, want 1:\n%s", got, text)
	}
	if strings.Contains(text, `side="origination"`) {
		t.Errorf("origination series without HTTPS backends:\n%s", text)
	}
}

// TestHandshakeBoundedByHeaderTimeout: on the HTTPS port --header-timeout
// bounds the TLS handshake too (the wait for the ClientHello included),
// as nginx's client_header_timeout does: a client that connects and says
// nothing, or stalls inside its ClientHello, is closed after it, not
// after the library's fixed 10 s.
func TestHandshakeBoundedByHeaderTimeout(t *testing.T) {
	ca := testpki.NewCA(t, "lb-test-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, _ := startLB(t, "--cert", cert, "--key", key, "--header-timeout", "300ms")
	for _, sent := range []string{"", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		io.WriteString(c, sent)
		c.SetReadDeadline(time.Now().Add(8 * time.Second))
		_, err = c.Read(make([]byte, 1))
		took := time.Since(began)
		c.Close()
		if err == nil || took > 3*time.Second {
			t.Fatalf("sent %q: closed after %v (read: %v), want about 300ms", sent, took, err)
		}
	}
}
