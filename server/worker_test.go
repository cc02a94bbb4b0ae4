package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/sockio"
)

// goid is the calling goroutine's number, read off its stack header.
func goid() int {
	var b [64]byte
	n := runtime.Stack(b[:], false)
	f := bytes.Fields(b[:n])
	id, _ := strconv.Atoi(string(f[1])) // "goroutine N [running]:"
	return id
}

// goidHandler answers each request with the number of the goroutine that
// served it.
func goidHandler() *handler {
	return &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		return serval.Respond(200, "text/plain", strconv.AppendInt(buf[:0], int64(goid()), 10))
	}}
}

// oneRequest makes one request on a new connection that asks to close,
// and waits for the close.
func oneRequest(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	send(t, c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	r := readResp(t, br, "GET")
	expectClosed(t, br)
	return r.body
}

// A slot's goroutine serves the slot's next connection too (worker.go),
// and leaves after workerIdleMax without one.
func TestSlotGoroutineReused(t *testing.T) {
	old := workerIdleMax
	workerIdleMax = 300 * time.Millisecond
	t.Cleanup(func() { workerIdleMax = old })
	cfg := testConfig()
	srv, ts := serve(t, goidHandler(), nil, nil, cfg)
	first := oneRequest(t, ts.addr)
	waitSlotFree(t, srv)
	if got := oneRequest(t, ts.addr); got != first {
		t.Fatalf("second connection served by goroutine %s, the first by %s: not reused", got, first)
	}
	waitSlotFree(t, srv)
	sl := &srv.slots[0] // the free list hands slot 0 out first
	if st := sl.wk.Load(); st != wkParked {
		t.Fatalf("slot 0's goroutine state %d, want parked (%d)", st, wkParked)
	}
	deadline := time.Now().Add(testTimeout)
	for sl.wk.Load() != wkNone {
		if time.Now().After(deadline) {
			t.Fatal("the parked goroutine did not leave after workerIdleMax")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := oneRequest(t, ts.addr); got == first {
		t.Fatalf("connection after the goroutine left served by the same goroutine %s", got)
	}
}

// A slot's goroutine that leaves after workerIdleMax takes its session's
// request body pump with it: a burst of uploads leaves no goroutine
// behind, as a burst of requests without a body leaves none (the pump
// outlived the slot's goroutine until Serve returned).
func TestSlotGoroutineLeavesWithPump(t *testing.T) {
	old := workerIdleMax
	workerIdleMax = 300 * time.Millisecond
	t.Cleanup(func() { workerIdleMax = old })
	srv, ts := serve(t, &minimalUp{up: origin(t)}, nil, nil, testConfig())
	body := strings.Repeat("b", 200<<10) // past the read buffer: the pump streams it
	c := dial(t, ts.addr)
	defer c.Close()
	send(t, c, "POST /u HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body)
	br := bufio.NewReader(c)
	if r := readResp(t, br, "POST"); r.StatusCode != 200 || r.body != "POST /u:"+body {
		t.Fatalf("status %d, %d bytes back", r.StatusCode, len(r.body))
	}
	expectClosed(t, br)
	if n := pumpGoroutines(); n != 1 {
		t.Fatalf("%d body pump goroutines after the upload, want 1", n)
	}
	waitSlotFree(t, srv)
	deadline := time.Now().Add(testTimeout)
	for srv.slots[0].wk.Load() != wkNone || pumpGoroutines() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slot goroutine state %d, %d body pump goroutines, after workerIdleMax",
				srv.slots[0].wk.Load(), pumpGoroutines())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pumpGoroutines counts the proxy sessions' body pump goroutines.
func pumpGoroutines() int {
	buf := make([]byte, 1<<20)
	return bytes.Count(buf[:runtime.Stack(buf, true)], []byte("proxy.(*Session).pumpLoop("))
}

// Connections that come and go concurrently, many rounds, each answered
// by its own slot: no connection is lost between a goroutine leaving and
// the accept loop handing it one (the race worker.go settles).
func TestSlotGoroutineHandoffRace(t *testing.T) {
	old := workerIdleMax
	workerIdleMax = time.Millisecond // leave as soon as possible
	t.Cleanup(func() { workerIdleMax = old })
	cfg := testConfig()
	_, ts := serve(t, goidHandler(), nil, nil, cfg)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				c, err := net.DialTimeout("tcp", ts.addr, testTimeout)
				if err != nil {
					t.Error(err)
					return
				}
				c.SetDeadline(time.Now().Add(testTimeout))
				if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
					t.Error(err)
				}
				var b [256]byte
				n, _ := c.Read(b[:])
				if !bytes.HasPrefix(b[:n], []byte("HTTP/1.1 200")) {
					t.Errorf("answer %q", b[:n])
				}
				c.Close()
				time.Sleep(time.Duration(len(b[:n])%3) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

// sockOpt reads an integer socket option of c (-1 on a failure when t
// is nil: a hook's goroutine must not call t.Fatal).
func sockOpt(t *testing.T, c *net.TCPConn, level, opt int) int {
	v, ok := sockio.ReadInt(c, func(fd int) (int, error) { return syscall.GetsockoptInt(fd, level, opt) })
	if !ok {
		if t == nil {
			return -1
		}
		t.Helper()
		t.Fatalf("socket option %d/%d unreadable", level, opt)
	}
	return v
}

// Accepted connections go without TCP keepalive unless Config.TCPKeepAlive
// asks for it, even from a net.Listen listener (keepalive by default).
func TestAcceptedKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		ka   time.Duration
		want int
	}{{0, 0}, {7 * time.Second, 1}} {
		t.Run(tc.ka.String(), func(t *testing.T) {
			var srvp atomic.Pointer[Server[*handler]]
			type opts struct{ on, idle int }
			got := make(chan opts, 1)
			h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
				srv := srvp.Load()
				for i := range srv.slots {
					if sl := &srv.slots[i]; &sl.x == x { // this goroutine's own slot
						got <- opts{sockOpt(t, sl.sock, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE),
							sockOpt(t, sl.sock, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)}
					}
				}
				return serval.Respond(200, "text/plain", []byte("ok"))
			}}
			cfg := testConfig()
			cfg.TCPKeepAlive = tc.ka
			srv, ts := serve(t, h, nil, nil, cfg)
			srvp.Store(srv)
			oneRequest(t, ts.addr)
			o := <-got
			if o.on != tc.want {
				t.Fatalf("SO_KEEPALIVE = %d, want %d", o.on, tc.want)
			}
			if tc.want == 1 && o.idle != int(tc.ka/time.Second) {
				t.Fatalf("TCP_KEEPIDLE = %d, want %d", o.idle, tc.ka/time.Second)
			}
		})
	}
}

// slotOf is the slot whose exchange x is (called on that slot's own
// goroutine, in a hook).
func slotOf[H serval.Handler](srv *Server[H], x *serval.Exchange) *slot[H] {
	for i := range srv.slots {
		if sl := &srv.slots[i]; &sl.x == x {
			return sl
		}
	}
	return nil
}

// Accepted sockets carry Config.UnsentBytesMax whatever the listener:
// from the listener itself when it is plain TCP (Listen), set on each
// connection when the accepted sockets do not inherit it (an MPTCP
// listener, net.Listen's default where the kernel has MPTCP).
func TestUnsentMaxFromListener(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_NOTSENT_LOWAT is Linux's")
	}
	const tcpNotsentLowat = 25
	for _, plain := range []bool{true, false} {
		t.Run("server.Listen="+strconv.FormatBool(plain), func(t *testing.T) {
			leakCheck(t)
			var srvp atomic.Pointer[Server[*handler]]
			got := make(chan int, 1)
			h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
				got <- sockOpt(t, slotOf(srvp.Load(), x).sock, syscall.IPPROTO_TCP, tcpNotsentLowat)
				return serval.Respond(200, "text/plain", []byte("ok"))
			}}
			cfg := testConfig()
			cfg.UnsentBytesMax = 96 << 10
			srv, err := New(h, nil, nil, nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			srvp.Store(srv)
			var ln net.Listener
			if plain {
				ln, err = Listen(t.Context(), "127.0.0.1:0")
			} else {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			if plain {
				// Connections the kernel took before Serve set the option
				// on the listener do not inherit it: wait for that.
				tl := ln.(*net.TCPListener)
				deadline := time.Now().Add(testTimeout)
				for listenerOpt(t, tl, syscall.IPPROTO_TCP, tcpNotsentLowat) != cfg.UnsentBytesMax {
					if time.Now().After(deadline) {
						t.Fatal("Serve did not set TCP_NOTSENT_LOWAT on the listener")
					}
					time.Sleep(time.Millisecond)
				}
			}
			for range 2 { // the first connection is checked, the second trusted
				oneRequest(t, ln.Addr().String())
				if v := <-got; v != cfg.UnsentBytesMax {
					t.Fatalf("TCP_NOTSENT_LOWAT = %d, want %d", v, cfg.UnsentBytesMax)
				}
			}
			if plain && !srv.unsentInherited {
				t.Fatal("a plain TCP listener's sockets did not inherit TCP_NOTSENT_LOWAT")
			}
		})
	}
}

// A plain connection's reads wait for readiness from its second request
// on: one that carries a single request never joins the FIN watcher.
func TestPollFromSecondRequest(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("sockets are not polled in this build (race detector, or another Go runtime)")
	}
	var srvp atomic.Pointer[Server[*handler]]
	polled := make(chan bool, 2)
	h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		polled <- slotOf(srvp.Load(), x).raw.Polled()
		return serval.Respond(200, "text/plain", []byte("ok"))
	}}
	srv, ts := serve(t, h, nil, nil, testConfig())
	srvp.Store(srv)
	c := dial(t, ts.addr)
	defer c.Close()
	br := bufio.NewReader(c)
	for i, want := range []bool{false, true} {
		send(t, c, get("/"))
		readResp(t, br, "GET")
		if got := <-polled; got != want {
			t.Fatalf("request %d: polled %v, want %v", i+1, got, want)
		}
	}
}

// listenerOpt reads an integer socket option of ln.
func listenerOpt(t *testing.T, ln *net.TCPListener, level, opt int) int {
	t.Helper()
	v, ok := sockio.ReadInt(ln, func(fd int) (int, error) { return syscall.GetsockoptInt(fd, level, opt) })
	if !ok {
		t.Fatalf("listener option %d/%d unreadable", level, opt)
	}
	return v
}

// tunnelUp is a handler forwarding to up that reports, when each exchange
// ends (OnLog, on the slot's goroutine, its socket still open), whether
// the client socket has TCP keepalive on.
type tunnelUp struct {
	up  *serval.Upstream
	srv atomic.Pointer[Server[*tunnelUp]]
	ka  chan int
}

func (h *tunnelUp) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return h.up }

func (h *tunnelUp) OnLog(x *serval.Exchange, _ *serval.LogEntry) {
	if sl := slotOf(h.srv.Load(), x); sl != nil && sl.sock != nil {
		h.ka <- sockOpt(nil, sl.sock, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}
}

// An upgraded connection's client socket gets TCP keepalive (it may sit
// idle up to TunnelIdleTimeout), unless it had it already; a plain
// exchange's does not.
func TestTunnelKeepAlive(t *testing.T) {
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Header.Get("Upgrade") == "" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi")
		io.Copy(io.Discard, br) // until the client's half-close
	})
	h := &tunnelUp{up: up, ka: make(chan int, 4)}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	srv, ts := serve(t, h, nil, nil, cfg)
	h.srv.Store(srv)

	c := dial(t, ts.addr)
	defer c.Close()
	br := bufio.NewReader(c)
	send(t, c, get("/plain"))
	readResp(t, br, "GET")
	if ka := <-h.ka; ka != 0 {
		t.Fatalf("a plain exchange's client socket: SO_KEEPALIVE %d, want 0", ka)
	}
	send(t, c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if r := readResp(t, br, "GET"); r.StatusCode != 101 {
		t.Fatalf("upgrade answered %d", r.StatusCode)
	}
	c.(*net.TCPConn).CloseWrite() // the upstream sees EOF and closes: the tunnel ends
	if ka := <-h.ka; ka != 1 {
		t.Fatalf("a tunnel's client socket: SO_KEEPALIVE %d, want 1", ka)
	}
}
