package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
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

// FuzzProxyExchange runs the whole data plane on arbitrary bytes: a client
// connection sends the first input to a real server that forwards every
// request to one of two upstream sockets in turn (a retry lands on the
// other; both plain, or both TLS with tlsUp), which answer each request
// they read with the second input (closing after it unless keep is set;
// before reading the request's body when early is set); with retry, the
// handler asks for a retry on every failure (OnError), which the proxy
// honours only while nothing reached the client and the body can be
// replayed; with overTLS, the client speaks TLS to a server that terminates
// it (the records kept in user space, as on a kernel without the tls
// module). Whatever the bytes:
//
//   - every request the upstream reads is one the server parsed from the
//     client, in the client's order, with its Host (a retry may repeat
//     the one before: once after a pooled connection's keep-alive race,
//     once more for the handler's); its head and body are well formed to
//     net/http, and the body is the one net/http reads from the client's
//     bytes, or cut short (the client's own ended early, or the upstream
//     answered before reading it): nothing is smuggled, split, glued or
//     altered;
//   - the client reads a sequence of well-formed responses (net/http's
//     parser is the judge), one per request at most, a forwarded one with
//     the body net/http reads from the upstream's bytes, nothing after
//     one that said Connection: close, at most the last one cut short;
//   - the server ends the connection within a bound (no hang) and never
//     recovers from a panic.
//
// Each execution takes a millisecond or so (real sockets): CI gives this
// target fewer executions than the parser's.
func FuzzProxyExchange(f *testing.F) {
	const (
		get  = "GET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n"
		post = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
		chk  = "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n"
		ok   = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	)
	seeds := []struct {
		client, upstream string
		keep             bool
	}{
		{get, ok, true},
		{get + post + chk, ok, true},
		{get + post + chk, ok, false},
		{"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + get, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true},
		{get + get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true},
		{get + get, "HTTP/1.1 200 OK\r\n\r\nclose-delimited", false},
		{get, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + ok, true},
		{get + get, "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nxyz", true},
		{get, ok + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", true},
		{get, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok", true},
		{get, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false},
		{get, "garbage\r\n\r\n", false},
		{get + get, "", false},
		{"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", ok, true},
		{"GET http://abs.example/x HTTP/1.1\r\nHost: other\r\n\r\n" + "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", ok, true},
		{"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK\r\n\r\nten bytes!", false},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, ok, true},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\ncut", ok, true},
		{"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes", "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nback", false},
	}
	for i, s := range seeds {
		f.Add([]byte(s.client), []byte(s.upstream), s.keep, i%2 == 1, i%3 == 1, i%4 == 2, i%5 == 3)
	}

	panics := &panicWatch{}
	h := &orderRecorder{}
	cfg := testConfig()
	cfg.ConnectionsMax = 4
	// Each request may wait out ResponseTimeout, once more on a retry: a
	// bound on requests bounds the execution (see fuzzExecBound).
	cfg.MaxRequestsPerConnection = 4
	cfg.Logger = slog.New(panics)
	cfg.Proxy.ConnectTimeout = time.Second
	cfg.Proxy.ResponseTimeout = 500 * time.Millisecond
	cfg.Proxy.RetriesMax = 1
	opki := newOriginPKI(f)
	cfg.Proxy.UpstreamTLS = tlsconn.ClientConfig{CAFile: opki.ca.File}
	leakCheck(f) // one check for both servers, after both stopped
	p := testPool(f, 2*upstreamsN)
	_, ts := serveUnchecked(f, h, p, nil, cfg)
	ca := testpki.NewCA(f, "Fuzz CA")
	cert, key := ca.Issue(f, testpki.Leaf{CommonName: "serval.test", Names: []string{"serval.test"}})
	tlsCfg := cfg
	tlsCfg.TLS = serverTLS(cert, key)
	_, tlsTS := serveUnchecked(f, h, p, nil, tlsCfg)
	clientTLS := tlsClientConfig(ca, "serval.test")
	up := newScriptedUpstream(f, opki.tc) // registered after the servers: closed before the leak checks
	h.ups = up.u[:]

	var gen int64 // the execution's generation (orderRecorder)
	f.Fuzz(func(t *testing.T, client, upstream []byte, keep, retry, overTLS, early, tlsUp bool) {
		if len(client) > 64<<10 || len(upstream) > 64<<10 {
			return
		}
		gen++
		up.begin(upstream, keep, early, gen)
		h.begin(retry, tlsUp, gen)
		addr, tc := ts.addr, (*tls.Config)(nil)
		if overTLS {
			addr, tc = tlsTS.addr, clientTLS
		}
		deadline := time.Now().Add(fuzzExecBound)
		got, err := exchangeRaw(addr, tc, client, deadline)
		if err != nil {
			t.Fatalf("client %q, upstream %q: %v", client, upstream, err)
		}
		reqs := h.end()
		seen, bodies, bad := up.end(deadline)
		if p := panics.seen.Load(); p != nil {
			t.Fatalf("client %q, upstream %q: the server recovered from a panic: %s", client, upstream, *p)
		}
		if len(bad) > 0 {
			t.Fatalf("client %q, upstream %q: the upstream read a malformed message: %s", client, upstream, strings.Join(bad, "; "))
		}
		repeats := 1
		if retry {
			repeats += cfg.Proxy.RetriesMax
		}
		if err := matchForwarded(reqs, seen, bodies, clientBodies(client, reqs), repeats); err != nil {
			t.Fatalf("client %q, upstream %q: %v (the server parsed %v; the upstream read %v)", client, upstream, err, reqs, seen)
		}
		if err := checkResponses(got, reqs, upstream); err != nil {
			t.Fatalf("client %q, upstream %q: %v; the client read %q", client, upstream, err, got)
		}
	})
}

// TestFuzzProxyCheckers: the checks of FuzzProxyExchange catch what they
// are for (a check that cannot fail proves nothing).
func TestFuzzProxyCheckers(t *testing.T) {
	a := fuzzReq{"GET", "/a", "h"}
	b := fuzzReq{"POST", "/b", "h"}
	smuggled := fuzzReq{"GET", "/admin", "h"}
	for _, c := range []struct {
		name         string
		parsed, seen []fuzzReq
		ok           bool
	}{
		{"in order", []fuzzReq{a, b}, []fuzzReq{a, b}, true},
		{"one answered without the upstream", []fuzzReq{a, b}, []fuzzReq{b}, true},
		{"a retry", []fuzzReq{a, b}, []fuzzReq{a, a, b}, true},
		{"hostless request sent with an authority", []fuzzReq{{"GET", "/a", ""}}, []fuzzReq{a}, true},
		{"a request the client never sent", []fuzzReq{a}, []fuzzReq{a, smuggled}, false},
		{"out of order", []fuzzReq{a, b}, []fuzzReq{b, a}, false},
		{"retried twice", []fuzzReq{a}, []fuzzReq{a, a, a}, false},
		{"another host", []fuzzReq{a}, []fuzzReq{{"GET", "/a", "evil"}}, false},
	} {
		if err := matchForwarded(c.parsed, c.seen, make([][]byte, len(c.seen)), nil, 1); (err == nil) != c.ok {
			t.Errorf("matchForwarded %s: %v", c.name, err)
		}
	}
	// Bodies: a request, then one with the same method and target and a
	// body (the first must not take the second's body for a retry's).
	client := []byte("POST /b HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
	parsed := []fuzzReq{b, b}
	want := clientBodies(client, parsed)
	if len(want) != 2 || string(want[0]) != "" || string(want[1]) != "hello" {
		t.Fatalf("clientBodies: %q", want)
	}
	for _, c := range []struct {
		name   string
		bodies [][]byte
		ok     bool
	}{
		{"the same bodies", [][]byte{{}, []byte("hello")}, true},
		{"a retry of the first, then the second", [][]byte{{}, {}, []byte("hello")}, true},
		{"the second cut short", [][]byte{{}, nil}, true},
		{"another body", [][]byte{{}, []byte("HELLO")}, false},
		{"each sent twice", [][]byte{{}, {}, []byte("hello"), []byte("hello")}, true},
		{"a body glued from two", [][]byte{[]byte("hellohello")}, false},
		{"part of a body", [][]byte{{}, []byte("hell")}, false},
	} {
		seen := make([]fuzzReq, len(c.bodies))
		for i := range seen {
			seen[i] = b
		}
		if err := matchForwarded(parsed, seen, c.bodies, want, 1); (err == nil) != c.ok {
			t.Errorf("matchForwarded bodies, %s: %v", c.name, err)
		}
	}
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, c := range []struct {
		name, got string
		reqs      []fuzzReq
		ok        bool
	}{
		{"two responses", ok + ok, []fuzzReq{a, a}, true},
		{"interim then final", "HTTP/1.1 100 Continue\r\n\r\n" + ok, []fuzzReq{b}, true},
		{"the last one cut short", ok + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", []fuzzReq{a, a}, true},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + ok, []fuzzReq{{"HEAD", "/", "h"}, a}, true},
		{"a refusal after the parsed ones", ok + "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", []fuzzReq{a}, true},
		{"more responses than requests", ok + ok, []fuzzReq{a}, false},
		{"bytes after Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok" + ok, []fuzzReq{a, a}, false},
		{"bytes after a response", ok + "garbage", []fuzzReq{a, a}, false},
		{"another body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", []fuzzReq{a}, false},
		{"the same body chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n", []fuzzReq{a}, true},
		{"a malformed chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", []fuzzReq{a}, false},
	} {
		if err := checkResponses([]byte(c.got), c.reqs, []byte(ok)); (err == nil) != c.ok {
			t.Errorf("checkResponses %s: %v", c.name, err)
		}
	}
}

// fuzzExecBound bounds one execution's exchange and the upstream's
// reads after it, together: under the fuzz engine's own limit (10s, after
// which the worker panics "deadlocked!" with its output discarded, and
// the coordinator reports only "fuzzing process hung or terminated
// unexpectedly: exit status 2"), so that a hang fails with this test's
// message.
const fuzzExecBound = 7 * time.Second

// exchangeRaw writes b on a new connection to addr (over TLS when tc is
// set), half-closes, and reads until the server closes, failing past a
// bound.
func exchangeRaw(addr string, tc *tls.Config, b []byte, deadline time.Time) ([]byte, error) {
	raw, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	raw.SetDeadline(deadline)
	var c interface {
		io.ReadWriter
		CloseWrite() error
	} = raw.(*net.TCPConn)
	if tc != nil {
		tlc := tls.Client(raw, tc)
		if err := tlc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %v", err)
		}
		c = tlc // its CloseWrite sends close_notify
	}
	// Written beside the read: the server may answer (and fill our
	// receive buffer) before it has read all we send.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if _, err := c.Write(b); err == nil {
			c.CloseWrite()
		}
	}()
	got, err := io.ReadAll(c)
	<-wrote
	if tc != nil && errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // closed without close_notify: the HTTP parse judges what came
	}
	if err != nil && !isReset(err) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got, fmt.Errorf("the server did not end the connection within %v", fuzzExecBound)
		}
		return got, err
	}
	return got, nil
}

// fuzzReq is a request as the server parsed it or the upstream read it.
type fuzzReq struct{ method, uri, host string }

func (r fuzzReq) String() string { return r.method + " " + r.uri + " (" + r.host + ")" }

// is reports whether the upstream's request u is r forwarded. A request
// without a Host (HTTP/1.0) is sent with the authority the client reached.
func (r fuzzReq) is(u fuzzReq) bool {
	return r.method == u.method && r.uri == u.uri && (r.host == u.host || r.host == "")
}

// matchForwarded checks that seen (the upstream's requests, in order,
// with the bodies it read whole; nil: cut short) is the server's parsed
// requests with some left out (answered without the upstream) and one at
// most repeated repeatsMax more times (retries), each with the body the client sent
// for it where want (the client's bodies as net/http reads them, see
// clientBodies) knows it.
func matchForwarded(parsed, seen []fuzzReq, bodies, want [][]byte, repeatsMax int) error {
	bodyOK := func(i, k int) bool {
		return k >= len(want) || bodies[i] == nil || bytes.Equal(bodies[i], want[k])
	}
	// A repeat of the last match is tried first: it keeps every later
	// request available, so it is never worse than moving on (which
	// takes the first match: any later one leaves fewer options).
	j, repeats := 0, 0
	for i, r := range seen {
		if j > 0 && parsed[j-1].is(r) && bodyOK(i, j-1) && repeats < repeatsMax {
			repeats++
			continue
		}
		k := j
		for k < len(parsed) && !(parsed[k].is(r) && bodyOK(i, k)) {
			k++
		}
		if k < len(parsed) {
			j, repeats = k+1, 0
			continue
		}
		for k = j - 1; k < len(parsed); k++ {
			if k >= 0 && parsed[k].is(r) && !bodyOK(i, k) {
				return fmt.Errorf("upstream request %d (%v) carried body %q, the client sent %q", i, r, bodies[i], want[k])
			}
		}
		return fmt.Errorf("upstream request %d (%v) is not one the client sent, in order (or one retry too many)", i, r)
	}
	return nil
}

// clientBodies returns the bodies of the client's requests as net/http
// reads them from its bytes, as far as net/http and the server parsed the
// same sequence of requests (where they part, the parser's differential
// fuzz targets have the case).
func clientBodies(client []byte, parsed []fuzzReq) [][]byte {
	br := bufio.NewReader(bytes.NewReader(client))
	var want [][]byte
	for len(want) < len(parsed) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != parsed[len(want)].method {
			break
		}
		b, err := io.ReadAll(req.Body)
		if err != nil {
			break
		}
		want = append(want, b)
	}
	return want
}

// checkResponses parses what the client read as responses to reqs, in
// order (by net/http: an independent judge). A 2xx or 3xx (never the
// proxy's own) with the status net/http reads from the upstream's script
// must carry the script's body, unless cut short.
func checkResponses(got []byte, reqs []fuzzReq, script []byte) error {
	br := bufio.NewReader(bytes.NewReader(got))
	finals := 0
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return nil
		}
		if finals > len(reqs) {
			return fmt.Errorf("response %d after %d requests", finals+1, len(reqs))
		}
		method := "GET"
		if finals < len(reqs) {
			method = reqs[finals].method
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return fmt.Errorf("response %d: head: %v", finals+1, err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil // the rest is the tunnel's
		}
		body, err := io.ReadAll(resp.Body)
		if cutShort(err) {
			if br.Buffered() > 0 {
				return fmt.Errorf("response %d: cut short, yet %d bytes follow", finals+1, br.Buffered())
			}
			return nil // the one way to say a body was cut
		}
		if err != nil {
			return fmt.Errorf("response %d: body: %v", finals+1, err)
		}
		if resp.StatusCode < 200 {
			continue
		}
		if resp.StatusCode < 400 {
			if status, want, ok := scripted(script, method); ok && status == resp.StatusCode && !bytes.Equal(body, want) {
				return fmt.Errorf("response %d: body %q, the upstream sent %q", finals+1, body, want)
			}
		}
		if finals == len(reqs) && (resp.StatusCode < 400 || !resp.Close) {
			// Only a request the server could not parse goes unrecorded,
			// and it is refused, closing the connection.
			return fmt.Errorf("response %d (%d) answers no request the server parsed", finals+1, resp.StatusCode)
		}
		finals++
		if resp.Close && br.Buffered() > 0 {
			return fmt.Errorf("response %d said Connection: close, yet %d bytes follow", finals, br.Buffered())
		}
	}
}

// scripted returns the final status and body net/http reads from the
// upstream's script as the answer to method; ok is false when it reads no
// whole final response.
func scripted(script []byte, method string) (status int, body []byte, ok bool) {
	br := bufio.NewReader(bytes.NewReader(script))
	for range 16 {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return 0, nil, false
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, nil, false
		}
		if resp.StatusCode >= 200 {
			return resp.StatusCode, body, true
		}
	}
	return 0, nil, false
}

// cutShort reports whether a body read failed because the message ended
// early (net/http says so with io.ErrUnexpectedEOF, or in its own words
// within a trailer section).
func cutShort(err error) bool {
	return err != nil && (errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "unexpected EOF"))
}

// trailerCut reports whether err is net/http's complaint about a trailer
// section with no end in sight because the stream ended (it reads the
// whole section ahead and cannot tell a cut one from an endless one).
func trailerCut(err error, br *bufio.Reader) bool {
	if !strings.Contains(err.Error(), "suspiciously long trailer") {
		return false
	}
	_, perr := br.Peek(br.Size())
	return perr != nil
}

// orderRecorder forwards each request to the next of the plain or the
// TLS half of ups, records each request the server parsed, and asks for a
// retry on every failure when told to. Every forwarded request carries
// the execution's generation (genField): the proxy may answer a client
// before the upstream has read a request it abandoned (a body that
// failed on the client's side), and the upstream must not count that
// request as the next execution's.
type orderRecorder struct {
	ups   []serval.Upstream
	next  atomic.Uint32
	tls   atomic.Bool
	retry atomic.Bool
	mu    sync.Mutex
	reqs  []fuzzReq
	gen   []byte // set in begin, read by OnUpstreamRequest
}

// genField names the generation field the upstream reads.
var genField = []byte("X-Fuzz-Gen")

func (o *orderRecorder) OnUpstreamRequest(_ *serval.Exchange, _ *serval.Request, out *serval.Outbound) {
	o.mu.Lock()
	g := o.gen
	o.mu.Unlock()
	out.Add(genField, g)
}

func (o *orderRecorder) OnError(*serval.Exchange, *serval.ProxyError) serval.ErrorAction {
	if o.retry.Load() {
		return serval.ErrorAction{Kind: serval.ErrorRetry}
	}
	return serval.ErrorAction{}
}

func (o *orderRecorder) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream {
	half, k := len(o.ups)/2, 0
	if o.tls.Load() {
		k = half
	}
	return &o.ups[k+int(o.next.Add(1))%half]
}

func (o *orderRecorder) OnRequest(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
	uri := string(req.Path)
	if req.Query != nil {
		uri += "?" + string(req.Query)
	}
	o.mu.Lock()
	o.reqs = append(o.reqs, fuzzReq{method: string(req.Method), uri: uri, host: string(req.Host)})
	o.mu.Unlock()
	return serval.Continue()
}

func (o *orderRecorder) begin(retry, tls bool, gen int64) {
	o.retry.Store(retry)
	o.tls.Store(tls)
	o.mu.Lock()
	o.reqs = o.reqs[:0]
	o.gen = strconv.AppendInt(nil, gen, 10)
	o.mu.Unlock()
}

func (o *orderRecorder) end() []fuzzReq {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fuzzReq(nil), o.reqs...)
}

// scriptedUpstream reads requests with net/http and answers each with the
// current script.
type scriptedUpstream struct {
	ln     [2 * upstreamsN]net.Listener
	u      [2 * upstreamsN]serval.Upstream // plain, then TLS
	wg     sync.WaitGroup
	active atomic.Int64 // requests being read or answered

	mu     sync.Mutex
	script []byte
	keep   bool
	early  bool   // answer before reading the body
	gen    string // the execution's generation (orderRecorder)
	seen   []fuzzReq
	bodies [][]byte // of seen, whole; nil: cut short
	bad    []string
	conns  map[net.Conn]struct{}
	closed bool
}

// upstreamsN is the number of upstream sockets FuzzProxyExchange uses in
// one execution: plain ones, or as many TLS ones.
const upstreamsN = 2

// newScriptedUpstream listens on 2*upstreamsN sockets on 127.0.0.1 until
// the test ends, the second half TLS with tc; they share the script and
// the record.
func newScriptedUpstream(t testing.TB, tc *tls.Config) *scriptedUpstream {
	s := &scriptedUpstream{conns: map[net.Conn]struct{}{}}
	for i := range s.ln {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		s.u[i] = serval.NewUpstream("127.0.0.1", port, serval.UpstreamIndex(i))
		if i >= upstreamsN {
			ln = tls.NewListener(ln, tc)
			s.u[i].TLS = true
		}
		s.ln[i] = ln
		s.wg.Add(1)
		go s.accept(ln)
	}
	t.Cleanup(func() {
		for _, ln := range s.ln {
			ln.Close()
		}
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *scriptedUpstream) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *scriptedUpstream) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		if _, err := br.Peek(1); err != nil {
			return // closed by the proxy (or at the test's end) between requests
		}
		s.active.Add(1)
		more := s.one(c, br)
		s.active.Add(-1)
		if !more {
			return
		}
	}
}

// one reads a request and answers it; false ends the connection.
func (s *scriptedUpstream) one(c net.Conn, br *bufio.Reader) bool {
	c.SetReadDeadline(time.Now().Add(2 * testTimeout))
	req, err := http.ReadRequest(br)
	if err != nil {
		if !isReset(err) && !errors.Is(err, net.ErrClosed) {
			s.fault(fmt.Sprintf("head: %v", err))
		}
		return false
	}
	if req.Header.Get("Connection") != "" && !strings.EqualFold(req.Header.Get("Connection"), "upgrade") {
		s.fault(fmt.Sprintf("Connection: %q reached the upstream", req.Header.Get("Connection")))
	}
	// Recorded as it arrives, before it is answered (and so before the
	// proxy can send a retry or the next request): the body comes later.
	// A request of an earlier execution, read late, is checked for form
	// but not recorded: the proxy abandoned it (see orderRecorder).
	s.mu.Lock()
	at, gen := -1, req.Header.Get("X-Fuzz-Gen")
	if gen == s.gen {
		at = len(s.seen)
		s.seen = append(s.seen, fuzzReq{method: req.Method, uri: req.RequestURI, host: req.Host})
		s.bodies = append(s.bodies, nil)
	}
	script, keep, early := s.script, s.keep, s.early
	s.mu.Unlock()
	if early {
		// The proxy must read this while it still sends the body.
		if _, err := c.Write(script); err != nil {
			return false
		}
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		// Cut short is the one way a proxy can say the client's body
		// ended early; anything else is a malformed body.
		if !cutShort(err) && !isReset(err) && !errors.Is(err, net.ErrClosed) && !trailerCut(err, br) {
			s.fault(fmt.Sprintf("body of %s %s: %v", req.Method, req.RequestURI, err))
		}
		return false // its body stays nil: cut short
	}
	s.mu.Lock()
	if at >= 0 && gen == s.gen && at < len(s.bodies) {
		s.bodies[at] = append([]byte{}, body...) // non-nil: whole
	}
	s.mu.Unlock()
	if !early {
		if _, err := c.Write(script); err != nil {
			return false
		}
	}
	if req.Header.Get("Upgrade") != "" {
		// What follows may be a tunnel's bytes, not requests: a 101 in
		// the script switched protocols (whatever the proxy did with it).
		io.Copy(io.Discard, br)
		return false
	}
	return keep && len(script) > 0 && !req.Close
}

func (s *scriptedUpstream) fault(bad string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, bad)
}

// begin sets the answer, keep-alive and timing of this execution and
// clears the record.
func (s *scriptedUpstream) begin(script []byte, keep, early bool, gen int64) {
	s.mu.Lock()
	// A fresh copy: a request of an earlier execution, read late, may
	// still be answered with the old script (one took it under the lock).
	s.script, s.keep, s.early = append([]byte(nil), script...), keep, early
	s.gen = strconv.FormatInt(gen, 10)
	s.seen, s.bodies, s.bad = s.seen[:0], s.bodies[:0], s.bad[:0]
	s.mu.Unlock()
}

// end waits for requests still being read (the proxy may be closing a
// connection it abandoned) and returns the record.
func (s *scriptedUpstream) end(deadline time.Time) (seen []fuzzReq, bodies [][]byte, bad []string) {
	for ; s.active.Load() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			bad = append(bad, "an upstream read still running after the client's exchange ended")
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fuzzReq(nil), s.seen...), append([][]byte(nil), s.bodies...), append(bad, s.bad...)
}

// panicWatch is a slog handler that remembers a recovered panic.
type panicWatch struct{ seen atomic.Pointer[string] }

func (p *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		p.seen.CompareAndSwap(nil, &msg)
	}
	return nil
}
func (p *panicWatch) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicWatch) WithGroup(string) slog.Handler      { return p }
