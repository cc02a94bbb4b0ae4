package prober

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// backend is a tiny HTTP server on 127.0.0.1 answering every request
// with response (or never, when response is ""). Stopped by Cleanup.
type backend struct {
	ln       net.Listener
	response string
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
	requests chan string
}

func startBackend(t *testing.T, addr, response string) *backend {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return startBackendOn(t, ln, response)
}

// startBackendOn is startBackend on a listener of the caller's.
func startBackendOn(t *testing.T, ln net.Listener, response string) *backend {
	t.Helper()
	b := &backend{ln: ln, response: response, requests: make(chan string, 100)}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		b.wg.Add(1)
		go b.handle(c)
	}
}

func (b *backend) handle(c net.Conn) {
	defer b.wg.Done()
	var head []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil {
			c.Close()
			return
		}
	}
	select {
	case b.requests <- string(head):
	default:
	}
	if b.response == "" {
		io.Copy(io.Discard, c) // hang until the peer or stop closes it
		c.Close()
		return
	}
	c.Write([]byte(b.response))
	c.Close()
}

func (b *backend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) upstream(i int) serval.Upstream {
	a := b.ln.Addr().(*net.TCPAddr)
	return serval.NewUpstream("127.0.0.1", uint16(a.Port), serval.UpstreamIndex(i))
}

const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

// quietLogger drops logs below Error so test output stays readable.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startProber builds and starts a prober over table, closed by Cleanup.
func startProber(t *testing.T, cfg Config) (*Prober, *health.State) {
	t.Helper()
	hs := health.New(len(cfg.Upstreams))
	cfg.Health = hs
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 500 * time.Millisecond
		if cfg.Timeout > cfg.Interval {
			cfg.Timeout = cfg.Interval
		}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, hs
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proberGoroutines counts goroutines running prober code (the leak
// check: none may survive Close).
func proberGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "prober.(*Prober).run") || strings.Contains(g, "prober.(*worker)") {
			n++
		}
	}
	return n
}
