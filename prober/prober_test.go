package prober

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
	"github.com/servalproxy/serval/internal/testnet"
)

func TestStatus500TakenOut(t *testing.T) {
	good := startBackend(t, "", ok200)
	bad := startBackend(t, "", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
	p, hs := startProber(t, Config{Upstreams: []serval.Upstream{good.upstream(0), bad.upstream(1)}, Path: "/healthz"})
	eventually(t, "500 backend out", func() bool { return !hs.Healthy(1) })
	eventually(t, "5 probes of the good backend", func() bool { return p.Stats(0).Probes >= 5 })
	if !hs.Healthy(0) {
		t.Fatal("good backend taken out")
	}
	st := p.Stats(1)
	if st.Downs != 1 || st.Failures < health.FailuresDefault {
		t.Fatalf("bad backend stats %+v", st)
	}
	req := <-good.requests
	gu := good.upstream(0)
	for _, want := range []string{"GET /healthz HTTP/1.1\r\n", "\r\nHost: " + gu.Addr() + "\r\n", "\r\nConnection: close\r\n"} {
		if !strings.Contains(req, want) {
			t.Errorf("probe request %q lacks %q", req, want)
		}
	}
}

// TestVersionNoted: a probe's answer records the upstream's HTTP version,
// so a proxy de-chunks request bodies for an HTTP/1.0 upstream (Python's
// http.server) from its first request on, not only after a proxied
// response (the first chunked upload used to reach it as empty).
func TestVersionNoted(t *testing.T) {
	old := startBackend(t, "", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok")
	cur := startBackend(t, "", ok200)
	table := []serval.Upstream{old.upstream(0), cur.upstream(1)}
	table[1].NoteVersion(serval.Version10) // it answered 1.0 once; a probe now says 1.1
	p, _ := startProber(t, Config{Upstreams: table})
	eventually(t, "two probes each", func() bool { return p.Stats(0).Probes >= 2 && p.Stats(1).Probes >= 2 })
	if !table[0].HTTP10() {
		t.Fatal("the HTTP/1.0 upstream is not noted as HTTP/1.0 after its probes")
	}
	if table[1].HTTP10() {
		t.Fatal("the HTTP/1.1 upstream is still noted as HTTP/1.0 after its probes")
	}
}

func TestHangTakenOutByTimeout(t *testing.T) {
	hang := startBackend(t, "", "")
	start := time.Now()
	p, hs := startProber(t, Config{Upstreams: []serval.Upstream{hang.upstream(0)}, Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond})
	eventually(t, "hanging backend out", func() bool { return !hs.Healthy(0) })
	// Three probes of ~20 ms timeout each plus waits: well under a second.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	if _, err := p.Probe(context.Background(), 0); !errors.Is(err, ErrProbeTimeout) {
		t.Fatalf("Probe err %v, want ErrProbeTimeout", err)
	}
}

func TestDeadBackendRestarted(t *testing.T) {
	// A refusing port, held until the backend listens on it.
	addr, listen := testnet.ReservedAddr(t)
	up, _ := serval.ParseUpstreams(addr)
	p, hs := startProber(t, Config{Upstreams: up})
	eventually(t, "dead backend out", func() bool { return !hs.Healthy(0) })
	if _, err := p.Probe(context.Background(), 0); err == nil || !strings.HasPrefix(err.Error(), "prober: dial") {
		t.Fatalf("Probe err %v, want a dial error", err)
	}
	startBackendOn(t, listen(), ok200)
	eventually(t, "restarted backend healthy", func() bool { return hs.Healthy(0) })
	if st := p.Stats(0); st.Ups != 1 || st.Downs != 1 {
		t.Fatalf("stats %+v, want one down and one up", st)
	}
}

func TestBodyContains(t *testing.T) {
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"7\r\nstatus:\r\n6\r\n ready\r\n0\r\n\r\n"
	length := "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nstatus ready"
	closeDelim := "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall ready here"
	degraded := "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nstatus degraded"
	// "ready" split across chunks must still be found after de-chunking.
	split := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nrea\r\n2\r\ndy\r\n0\r\n\r\n"
	var table []serval.Upstream
	for i, resp := range []string{chunked, length, closeDelim, degraded, split} {
		table = append(table, startBackend(t, "", resp).upstream(i))
	}
	// Not the helper's 20 ms interval: the timeout is capped at it, and a
	// loaded machine (CI, -race) makes a healthy backend's probe take that
	// long, a failure the check below would count.
	p, hs := startProber(t, Config{Upstreams: table, BodyContains: "ready", Interval: 250 * time.Millisecond})
	eventually(t, "degraded backend out", func() bool { return !hs.Healthy(3) })
	for _, i := range []serval.UpstreamIndex{0, 1, 2, 4} {
		if _, err := p.Probe(context.Background(), i); err != nil {
			t.Errorf("backend %d: %v", i, err)
		}
		if !hs.Healthy(i) || p.Stats(i).Failures != 0 {
			t.Errorf("backend %d: healthy %v, stats %+v", i, hs.Healthy(i), p.Stats(i))
		}
	}
	if _, err := p.Probe(context.Background(), 3); err != ErrBody {
		t.Fatalf("degraded: %v, want ErrBody", err)
	}
}

func TestStatusRangeAndInterim(t *testing.T) {
	redirect := startBackend(t, "", "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
	interim := startBackend(t, "", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
	garbage := startBackend(t, "", "SSH-2.0-OpenSSH\r\n\r\n")
	hs := health.New(3)
	p, err := New(Config{Upstreams: []serval.Upstream{redirect.upstream(0), interim.upstream(1), garbage.upstream(2)},
		Health: hs, StatusMin: 200, StatusMax: 299, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var se *StatusError
	if st, err := p.Probe(context.Background(), 0); !errors.As(err, &se) || se.Status != 302 || st != 302 {
		t.Fatalf("302 with range 200-299: %d %v", st, err)
	}
	if st, err := p.Probe(context.Background(), 1); err != nil || st != 204 {
		t.Fatalf("100 then 204: %d %v", st, err)
	}
	if _, err := p.Probe(context.Background(), 2); err == nil {
		t.Fatal("garbage response passed")
	}
}

// TestCloseStopsEverything: Close aborts in-flight probes (a hanging
// backend, a long timeout) and returns only when no prober goroutine is
// left.
func TestCloseStopsEverything(t *testing.T) {
	base := proberGoroutines()
	hang := startBackend(t, "", "")
	good := startBackend(t, "", ok200)
	hs := health.New(2)
	p, err := New(Config{Upstreams: []serval.Upstream{hang.upstream(0), good.upstream(1)}, Health: hs,
		Interval: 10 * time.Second, Jitter: time.Millisecond, Timeout: 10 * time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != ErrStarted {
		t.Fatalf("second Start: %v", err)
	}
	<-hang.requests // the hanging probe is in flight
	start := time.Now()
	p.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v with a probe in flight", d)
	}
	// Close returned after every probing goroutine called wg.Done, its
	// last act; one may still be in its final return for a moment (its
	// stack still shows run), so the count is awaited, briefly.
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		n := proberGoroutines()
		if n == base {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d prober goroutines a second after Close, want %d", n, base)
		}
	}
	if !hs.Healthy(0) || p.Stats(0).Probes != 0 {
		t.Fatal("an aborted probe was recorded")
	}
	p.Close() // idempotent
}

func TestConfigRejects(t *testing.T) {
	up := []serval.Upstream{serval.NewUpstream("127.0.0.1", 1, 0)}
	tlsUp := []serval.Upstream{serval.NewUpstream("127.0.0.1", 1, 0)}
	tlsUp[0].TLS = true
	hs := health.New(1)
	for name, tc := range map[string]struct {
		cfg  Config
		want error
	}{
		"no upstreams": {Config{Health: hs}, ErrNoUpstreams},
		"no health":    {Config{Upstreams: up}, ErrNoHealth},
		"path":         {Config{Upstreams: up, Health: hs, Path: "healthz"}, ErrPath},
		"path crlf":    {Config{Upstreams: up, Health: hs, Path: "/a\r\nX: y"}, ErrPath},
		"host":         {Config{Upstreams: up, Health: hs, Host: "a b"}, ErrHost},
		"interval":     {Config{Upstreams: up, Health: hs, Interval: time.Millisecond}, ErrInterval},
		"jitter":       {Config{Upstreams: up, Health: hs, Interval: time.Second, Jitter: time.Second}, ErrJitter},
		"timeout":      {Config{Upstreams: up, Health: hs, Interval: time.Second, Timeout: 2 * time.Second}, ErrTimeout},
		"status":       {Config{Upstreams: up, Health: hs, StatusMin: 300, StatusMax: 200}, ErrStatusRange},
		"body":         {Config{Upstreams: up, Health: hs, BodyContains: strings.Repeat("x", BodyBytesMax+1)}, ErrBodyLen},
		"tls":          {Config{Upstreams: tlsUp, Health: hs}, ErrTLSDial},
	} {
		if _, err := New(tc.cfg); err != tc.want {
			t.Errorf("%s: err %v, want %v", name, err, tc.want)
		}
	}
}

// TestUpstreamClosesFirst: after its answer a probe waits for the
// upstream's close (it asked for one), so the upstream, not the prober,
// keeps the connection's TIME_WAIT; an upstream that keeps the
// connection open holds the probe back at most peerCloseWait.
func TestUpstreamClosesFirst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hold  time.Duration // how long the upstream waits for the prober's close
		first string
	}{
		{"closes after 100ms", 100 * time.Millisecond, "upstream"},
		{"keeps it open", 2 * time.Second, "prober"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			first := make(chan string, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				c.Write([]byte(ok200))
				buf := make([]byte, 4096)
				c.SetReadDeadline(time.Now().Add(tc.hold))
				if _, err := c.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					first <- "prober"
					return
				}
				first <- "upstream"
			}()
			a := ln.Addr().(*net.TCPAddr)
			p, err := New(Config{Upstreams: []serval.Upstream{serval.NewUpstream("127.0.0.1", uint16(a.Port), 0)},
				Health: health.New(1), Logger: quietLogger(), Interval: time.Second, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			status, err := p.Probe(context.Background(), 0)
			took := time.Since(start)
			if status != 200 || err != nil {
				t.Fatalf("probe: %d %v", status, err)
			}
			if took > peerCloseWait+time.Second/2 {
				t.Errorf("the probe took %v", took)
			}
			select {
			case who := <-first:
				if who != tc.first {
					t.Errorf("%s closed first, want %s", who, tc.first)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream saw no close")
			}
			<-done
		})
	}
}
