package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	hexenc "encoding/hex"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testpki"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/tlsconn"
)

// startWith runs a server like start, with a pool, and returns it too.
func startWith[H serval.Handler](t testing.TB, h H, p serval.Pool, cfg Config) (*Server[H], *testServer) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	return serve(t, h, p, nil, cfg)
}

// testPool is a pool.Fixed for n upstreams, closed at cleanup.
func testPool(t testing.TB, n int) *pool.Fixed {
	p, err := pool.New(pool.DefaultConfig(n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// serverTLS is a TLS termination config for cert/key.
func serverTLS(cert, key string) *tlsconn.ServerConfig {
	return &tlsconn.ServerConfig{CertFile: cert, KeyFile: key, HandshakeTimeout: 2 * time.Second}
}

// tlsClientConfig trusts ca and names serverName.
func tlsClientConfig(ca *testpki.CA, serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: serverName, NextProtos: []string{"http/1.1"}}
}

// httpClient is a net/http client (HTTP/1.1 only) for base URLs of the
// server, closed at cleanup.
func httpClient(t testing.TB, tc *tls.Config) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:    tc,
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
		TLSNextProto:       map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 4 * testTimeout}
}

// payload is deterministic test data, generated once.
var payload = sync.OnceValue(func() []byte {
	b := make([]byte, 16<<20)
	r := rand.NewChaCha8([32]byte{'s', 'e', 'r', 'v', 'a', 'l'})
	r.Read(b)
	return b
})

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hexenc.EncodeToString(s[:])
}

// startOrigin runs a net/http origin, TLS when tc is not nil. It answers
// every request with headers X-Req-Len and X-Req-Sha256 (the request body
// it read), X-Proto (X-Forwarded-Proto it got), and a body of
// payload()[:len] where len is the "len" query parameter, framed by
// Content-Length unless "frame=chunked".
func startOrigin(t testing.TB, tc *tls.Config) (host string, port uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(originHandler), ErrorLog: log.New(io.Discard, "", 0),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	if tc != nil {
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, tc)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return ap.Addr().String(), ap.Port()
}

func originHandler(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	w.Header().Set("X-Req-Len", strconv.FormatInt(n, 10))
	w.Header().Set("X-Req-Sha256", hexenc.EncodeToString(h.Sum(nil)))
	w.Header().Set("X-Proto", r.Header.Get("X-Forwarded-Proto"))
	size, _ := strconv.Atoi(r.URL.Query().Get("len"))
	body := payload()[:size]
	if r.URL.Query().Get("frame") != "chunked" {
		w.Header().Set("Content-Length", strconv.Itoa(size))
	}
	for len(body) > 0 {
		k := min(len(body), 256<<10)
		if _, err := w.Write(body[:k]); err != nil {
			return
		}
		body = body[k:]
		if f, ok := w.(http.Flusher); ok && r.URL.Query().Get("frame") == "chunked" {
			f.Flush()
		}
	}
}

// router sends /<digit>/... to upstream <digit> and records the TLS view
// of the last request it saw.
type router struct {
	ups []serval.Upstream

	mu   sync.Mutex
	last serval.TLSInfo
	tls  bool
}

func (h *router) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	h.mu.Lock()
	h.tls = x.TLS
	if x.TLSInfo != nil {
		h.last = *x.TLSInfo
	}
	h.mu.Unlock()
	i := 0
	if len(req.Path) > 1 {
		i = int(req.Path[1] - '0')
	}
	if i < 0 || i >= len(h.ups) {
		return nil
	}
	return &h.ups[i]
}

func (h *router) seen() (bool, serval.TLSInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tls, h.last
}

// exchange sends reqLen payload bytes (chunked or not) to url?len=respLen
// and checks both bodies byte for byte.
func exchange(t testing.TB, c *http.Client, url string, reqLen, respLen int, reqChunked, respChunked bool) *http.Response {
	t.Helper()
	var body io.Reader = bytes.NewReader(payload()[:reqLen])
	if reqChunked {
		body = struct{ io.Reader }{body} // unknown length: chunked
	}
	u := url + "?len=" + strconv.Itoa(respLen)
	if respChunked {
		u += "&frame=chunked"
	}
	req, err := http.NewRequest("POST", u, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: body: %v", u, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: status %d: %s", u, resp.StatusCode, got)
	}
	if h := resp.Header.Get("X-Req-Sha256"); h != sha(payload()[:reqLen]) {
		t.Fatalf("POST %s: request body corrupted: origin read %s bytes", u, resp.Header.Get("X-Req-Len"))
	}
	if len(got) != respLen || !bytes.Equal(got, payload()[:respLen]) {
		t.Fatalf("POST %s: response body corrupted: %d bytes, want %d", u, len(got), respLen)
	}
	if respChunked != (resp.ContentLength < 0) {
		t.Fatalf("POST %s: response framing: ContentLength %d", u, resp.ContentLength)
	}
	return resp
}

// complete reports whether b holds a whole response with a
// Content-Length body.
func complete(b []byte) bool {
	i := bytes.Index(b, []byte("\r\n\r\n"))
	j := bytes.Index(b, []byte("Content-Length: "))
	if i < 0 || j < 0 {
		return false
	}
	n := 0
	for _, d := range b[j+len("Content-Length: "):] {
		if d < '0' || d > '9' {
			break
		}
		n = n*10 + int(d-'0')
	}
	return len(b) >= i+4+n
}
