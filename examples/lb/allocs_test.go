//go:build !race

package main

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawClient is a keep-alive client with preallocated buffers that parses
// just enough of each response (the head's end and Content-Length) to
// read it whole: it allocates nothing per request, so what AllocsPerRun
// counts is the balancer's and its in-process backends'.
type rawClient struct {
	c   net.Conn
	req []byte
	buf []byte
	t   testing.TB
}

func newRawClient(t testing.TB, c net.Conn, req string) *rawClient {
	t.Cleanup(func() { c.Close() })
	// One deadline for the whole test: setting one per request would be
	// the client's allocation-free cost anyway, but this is simpler.
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawClient{c: c, req: []byte(req), buf: make([]byte, 64<<10), t: t}
}

var (
	headEnd     = []byte("\r\n\r\n")
	lengthField = []byte("\r\ncontent-length:")
	status200   = []byte("HTTP/1.1 200 ")
)

// do sends the request and reads its response; it fails the test on
// anything but a 200 with a Content-Length.
func (k *rawClient) do() {
	if _, err := k.c.Write(k.req); err != nil {
		k.t.Fatal(err)
	}
	n, end := 0, -1
	for end < 0 {
		m, err := k.c.Read(k.buf[n:])
		if err != nil {
			k.t.Fatalf("reading the response head: %v (after %q)", err, k.buf[:n])
		}
		n += m
		end = bytes.Index(k.buf[:n], headEnd)
	}
	head := k.buf[:end+2]
	if !bytes.HasPrefix(head, status200) {
		k.t.Fatalf("response: %q", head)
	}
	length := -1
	for i := 0; i+len(lengthField) <= len(head); i++ {
		if !asciiEqualFold(head[i:i+len(lengthField)], lengthField) {
			continue
		}
		length = 0
		for _, b := range head[i+len(lengthField):] {
			if b == ' ' {
				continue
			}
			if b < '0' || b > '9' {
				break
			}
			length = length*10 + int(b-'0')
		}
		break
	}
	if length < 0 {
		k.t.Fatalf("response without Content-Length: %q", head)
	}
	total := end + 4 + length
	if total > len(k.buf) {
		k.t.Fatalf("response of %d bytes, buffer %d", total, len(k.buf))
	}
	if n < total {
		if _, err := io.ReadFull(k.c, k.buf[n:total]); err != nil {
			k.t.Fatal(err)
		}
	} else if n > total {
		k.t.Fatalf("%d bytes after the response", n-total)
	}
}

func asciiEqualFold(a, lower []byte) bool {
	for i := range a {
		b := a[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lower[i] {
			return false
		}
	}
	return true
}

// TestSteadyStateAllocs pins the whole balancer, as its flags compose it,
// at zero allocations per proxied keep-alive request: passive health
// checks, the access log written to a file, Prometheus metrics, Via, the
// round-robin policy and the pool, then other policies and sticky
// sessions, for a GET and for POST bodies framed by
// Content-Length and chunked. The count is the process's (the backends
// and this client are in-process and allocation-free too). The probes,
// which allocate per probe, are set far apart so that none falls inside
// the measurement. TLS termination is pinned in server/tls_alloc_test.go
// (crypto/tls as a client allocates per record read, so it cannot share
// this process-wide count); bench/allocs.sh measures the built binary
// from outside, TLS included.
func TestSteadyStateAllocs(t *testing.T) {
	backends := echoBackends(t, "echo-1", "echo-2")
	common := []string{"--backends", backends, "--health-interval", "10m"}
	for _, flags := range [][]string{
		{"--metrics-addr", "127.0.0.1:0", "--via", "edge1", "--access-log", filepath.Join(t.TempDir(), "access.log")},
		{"--lb", "least-conn", "--retries", "2"},
		{"--lb", "p2c"},
		{"--lb", "hash:header:X-User"},
		{"--sticky-cookie", "srv"},
	} {
		t.Run(strings.Join(flags[:2], "="), func(t *testing.T) {
			addr, logs := startLB(t, append(common, flags...)...)
			steadyStateAllocs(t, addr, logs)
		})
	}
}

func steadyStateAllocs(t *testing.T, addr string, logs *syncBuffer) {
	body := string(bytes.Repeat([]byte("0123456789abcdef"), 64))
	for _, tc := range []struct{ name, req string }{
		{"GET", "GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nUser-Agent: alloc-test\r\nX-User: u1\r\nAccept: */*\r\n\r\n"},
		{"POST Content-Length", "POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/octet-stream\r\n" +
			"Content-Length: 1024\r\n\r\n" + body},
		{"POST chunked", "POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"400\r\n" + body + "\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			k := newRawClient(t, c, tc.req)
			for range 200 { // warm: the pool's connections, the buffers
				k.do()
			}
			if n := testing.AllocsPerRun(2000, k.do); n != 0 {
				t.Errorf("%v allocations per proxied request, want 0; logs:\n%s", n, logs)
			}
		})
	}
}
