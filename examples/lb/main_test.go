package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval/examples/echo-backend/echo"
	"github.com/servalproxy/serval/internal/syncbuf"
	"github.com/servalproxy/serval/internal/testnet"
	"github.com/servalproxy/serval/server"
)

// syncBuffer collects logs written by concurrent goroutines.
type syncBuffer = syncbuf.Buffer

// startLB runs the balancer in-process with args; the test's cleanup
// cancels it and waits for run to return, checking its exit code.
func startLB(t *testing.T, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	return startLBWith(t, nil, args...)
}

// startLBWith is startLB with a reload trigger (what SIGHUP feeds in
// main).
func startLBWith(t *testing.T, hup <-chan os.Signal, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	return startLBCtx(t, context.Background(), hup, args...)
}

// startLBCtx is startLBWith under parent: cancelling it is what SIGTERM
// does in main (the drain starts); the test's cleanup waits for the exit.
func startLBCtx(t *testing.T, parent context.Context, hup <-chan os.Signal, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	logs = new(syncBuffer)
	ctx, cancel := context.WithCancel(parent)
	done := make(chan int, 1)
	exited := false // run returned before listening: nothing to wait for
	// Port 0 on 127.0.0.1: the kernel picks the port as it binds, so the
	// in-process backends can never take it first. A few slots: every
	// slot's buffers are allocated at startup, which is slow under the
	// race detector.
	go func() {
		done <- runWith(ctx, append([]string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "64"}, args...), logs, hup)
	}()
	t.Cleanup(func() {
		cancel()
		if exited {
			return
		}
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("run returned %d, want 0; logs:\n%s", code, logs)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return within 15s of cancel; logs:\n%s", logs)
		}
	})
	// Wait until it says where it listens, then accepts there (bounded).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if addr == "" {
			if m := listeningAddr.FindStringSubmatch(logs.String()); m != nil {
				addr = m[1]
			}
		}
		if addr != "" {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return addr, logs
			}
		}
		select {
		case code := <-done:
			exited = true
			t.Fatalf("run exited with %d before listening; logs:\n%s", code, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb not listening (address %q) after 10s; logs:\n%s", addr, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listeningAddr finds the address in the "load balancer listening" line.
var listeningAddr = regexp.MustCompile(`msg="load balancer listening" addr=(\S+)`)

// roundTrip sends raw request bytes on c and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestRoundRobinDefaultBackends: with no --backends, two requests on one
// client connection reach backend-1 and backend-2, one each, and each
// backend sees our header fields byte for byte, in order.
func TestRoundRobinDefaultBackends(t *testing.T) {
	addr, logs := startLB(t)
	if !strings.Contains(logs.String(), "started two in-process echo backends") {
		t.Errorf("no log line about the in-process backends; logs:\n%s", logs)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)

	sent := []string{"Host: " + addr, "User-Agent: serval-lb-test/1.0", "Accept: */*", "X-Case-Kept: MiXeD value"}
	raw := "GET /test?q=1 HTTP/1.1\r\n" + strings.Join(sent, "\r\n") + "\r\n\r\n"
	seen := map[string]bool{}
	for i := range 2 {
		resp, body := roundTrip(t, c, br, raw)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, body %q", i, resp.StatusCode, body)
		}
		id := resp.Header.Get("X-Backend-Id")
		if id != "backend-1" && id != "backend-2" {
			t.Fatalf("request %d: X-Backend-Id %q", i, id)
		}
		if seen[id] {
			t.Errorf("request %d went to %s again: not round-robin", i, id)
		}
		seen[id] = true
		if want := "=== Echo Backend: " + id + " (port "; !strings.HasPrefix(body, want) {
			t.Errorf("request %d: body starts %q, want %q", i, body[:min(len(body), 60)], want)
		}
		for _, want := range []string{"\nMethod: GET\n", "\nPath: /test?q=1\n", "\nVersion: HTTP/1.1\n", "\nBody: (empty)\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("request %d: dump lacks %q:\n%s", i, want, body)
			}
		}
		checkHeaders(t, i, body, sent)
	}
}

// checkHeaders checks the dump's header list: the fields we sent, byte for
// byte and in order, plus only the fields a proxy adds (X-Forwarded-*, Via).
func checkHeaders(t *testing.T, i int, body string, sent []string) {
	t.Helper()
	_, rest, ok := strings.Cut(body, "\nHeaders:\n")
	if !ok {
		t.Errorf("request %d: no Headers section:\n%s", i, body)
		return
	}
	section, _, _ := strings.Cut(rest, "\n\n")
	var ours []string
	for _, line := range strings.Split(section, "\n") {
		f := strings.TrimPrefix(line, "  ")
		name, _, _ := strings.Cut(f, ":")
		switch strings.ToLower(name) {
		case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via":
			continue
		}
		ours = append(ours, f)
	}
	if strings.Join(ours, "\n") != strings.Join(sent, "\n") {
		t.Errorf("request %d: backend saw fields\n%s\nwant\n%s", i, strings.Join(ours, "\n"), strings.Join(sent, "\n"))
	}
}

// TestExplicitBackends points the balancer at echo backends given with
// --backends and checks round-robin over net/http's client (new
// connections as well as reused ones).
func TestExplicitBackends(t *testing.T) {
	list := echoBackends(t, "one", "two", "three")
	addr, _ := startLB(t, "--backends", list, "--connect-timeout", "1s", "--response-timeout", "5s", "--idle-per-upstream", "4")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var got []string
	for range 6 {
		resp, err := cl.Get("http://" + addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.Header.Get("X-Backend-Id"))
	}
	for i := 3; i < len(got); i++ {
		if got[i] != got[i-3] || got[i] == got[i-1] {
			t.Fatalf("backend order %v is not round-robin over 3", got)
		}
	}
}

func TestHelpAndBadFlags(t *testing.T) {
	var out strings.Builder
	if code := run(context.Background(), []string{"--help"}, &out); code != 0 {
		t.Errorf("--help exit %d", code)
	}
	for _, f := range []string{"-port", "-backends", "-debug", "-connect-timeout", "-response-timeout", "-idle-per-upstream",
		"-lb", "-policy", "-sticky-cookie", "-health-path", "-health-interval", "-fail-timeout", "-health-timeout", "-unhealthy-threshold",
		"-healthy-threshold", "-passive-5xx", "-no-health", "-all-unhealthy", "-cert", "-key", "-client-ca", "-upstream-tls",
		"-upstream-ca", "-upstream-server-name", "-insecure-skip-verify", "-ktls", "-retries", "-access-log", "-metrics-addr",
		"-ignore-client-abort", "-version", "-backend-max-conns", "-trust-forwarded", "-via", "-shutdown-timeout", "-client-cert-header",
		"-max-header-bytes", "-max-header-fields", "-max-body-size", "-header-timeout", "-body-timeout", "-idle-timeout", "-write-timeout"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage lacks %s:\n%s", f, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"--version"}, &out); code != 0 || !strings.HasPrefix(out.String(), "serval lb ") {
		t.Errorf("--version: exit %d, output %q", code, out.String())
	}
	for _, args := range [][]string{{"--port", "70000"}, {"--idle-per-upstream", "-1"}, {"--idle-per-upstream", "4097"}, {"--backends", "nope"}, {"extra"},
		{"--lb", "random"}, {"--policy", "hash:nope"}, {"--all-unhealthy", "maybe"}, {"--ktls", "sometimes"},
		{"--cert", "c.pem"}, {"--key", "k.pem"}, {"--client-ca", "ca.pem"}, {"--unhealthy-threshold", "0"},
		{"--healthy-threshold", "100000"}, {"--health-timeout", "0s"}, {"--backends", "127.0.0.1:1=0"},
		{"--backends", "127.0.0.1:1", "--upstream-tls", "127.0.0.1:2"}, {"--retries", "-1"}, {"--retries", "9"},
		{"--backend-max-conns", "-1"}, {"--backend-max-conns", "70000"}, {"--via", "a b"}, {"--via", strings.Repeat("v", 65)}, {"--via", "é"}, {"--via", "edge:"}, {"--via", "edge:8x"}, {"--via", "a/b"},
		{"--shutdown-timeout", "-1s"}, {"--shutdown-timeout", "25h"}, {"--sticky-cookie", "bad;cookie"}, {"--health-path", "nopath"}, {"--health-path", "/a b"},
		{"--max-header-bytes", "1023"}, {"--max-header-bytes", "1048577"}, {"--max-header-fields", "0"}, {"--max-header-fields", "1025"},
		{"--max-body-size", "0"}, {"--max-body-size", "-1"}, {"--max-body-size", "+5"}, {"--max-body-size", "1t"}, {"--max-body-size", "k"},
		{"--max-body-size", "9999999999g"}, {"--upstream-ca", "ca.pem"}, {"--upstream-server-name", "b.example"}, {"--insecure-skip-verify"},
		{"--ktls", "require"}, {"--backends", ""}, {"--backends", " "}, {"--lb", "p2c", "--policy", "weighted"}, {"--lb", "p2c", "--policy", "nope"}, {"--no-health", "--passive-5xx"}, {"--health-interval", "1h"}, {"--health-interval", "-1s"}, {"--fail-timeout", "-1s", "--health-interval", "0"}, {"--fail-timeout", "10ms", "--health-interval", "0"}, {"--fail-timeout", "2h", "--health-interval", "0"}, {"--fail-timeout", "5s"}, {"--fail-timeout", "5s", "--health-interval", "0", "--no-health"},
		{"--backends", "127.0.0.1:1,127.0.0.1:1", "--sticky-cookie", "s"},
		{"--connect-timeout", "25h"}, {"--response-timeout", "0"}, {"--tunnel-idle-timeout", "-1s"}, {"--header-timeout", "0s"}, {"--body-timeout", "-1s"}, {"--idle-timeout", "25h"}, {"--write-timeout", "0"},
		{"--metrics-addr", "127.0.0.1"}, {"--metrics-addr", "127.0.0.1:99999"}, {"--metrics-addr", "127.0.0.1:x"}, {"--metrics-addr", ":-1"}} {
		out.Reset()
		if code := run(context.Background(), append([]string{"--port", "0"}, args...), &out); code != 2 {
			t.Errorf("%v: exit %d, want 2; output:\n%s", args, code, out.String())
		}
		// Each names the flag at fault, with no package prefix doubled.
		if s := out.String(); strings.Contains(s, "lb: lb:") || strings.Contains(s, "policy \"127.0.0.1") {
			t.Errorf("%v: unclear message:\n%s", args, s)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// echoBackends starts in-process echo backends for the test and returns
// their --backends list; they stop when the test ends, after any
// balancer the test starts later (cleanups run last first).
func echoBackends(t *testing.T, ids ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	list, err := startEchoBackends(ctx, &wg, discardLogger(), ids...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return list
}

// TestDeadBackendTakenOut: with one backend refusing connections, every
// request is answered by the live one: a refused connect is retried there
// (the dead backend never saw the request, so a POST goes too), and
// passive health takes the dead one out of rotation. With --retries 0 the
// requests sent to the dead backend before that get 502.
func TestDeadBackendTakenOut(t *testing.T) {
	live := echoBackends(t, "live")
	dead := testnet.RefusingAddr(t)
	run := func(args ...string) []int {
		addr, _ := startLB(t, append([]string{"--backends", dead + "," + live, "--connect-timeout", "1s"}, args...)...)
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var codes []int
		for i := range 20 {
			var resp *http.Response
			var err error
			if i%2 == 0 {
				resp, err = cl.Get("http://" + addr + "/")
			} else {
				resp, err = cl.Post("http://"+addr+"/", "text/plain", strings.NewReader("body "+strconv.Itoa(i)))
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && i%2 == 1 && !strings.Contains(string(b), "body "+strconv.Itoa(i)) {
				t.Fatalf("request %d: the body did not reach the backend: %q", i, b)
			}
			codes = append(codes, resp.StatusCode)
		}
		return codes
	}
	codes := run()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d: status %d; all statuses %v", i, c, codes)
		}
	}
	codes = run("--retries", "0")
	if codes[0] != 502 {
		t.Fatalf("--retries 0: first request (to the dead backend) got %d, want 502; all %v", codes[0], codes)
	}
	for i, c := range codes[10:] {
		if c != 200 {
			t.Fatalf("--retries 0: request %d: status %d after passive health; all %v", 10+i, c, codes)
		}
	}
}

// TestBackendComesBack: a backend that was down and taken out of rotation
// is brought back by the active prober once it listens again.
func TestBackendComesBack(t *testing.T) {
	live := echoBackends(t, "live")
	late, listenLate := testnet.ReservedAddr(t)
	addr, _ := startLB(t, "--backends", live+","+late, "--health-interval", "100ms") // a probe's timeout is capped at the interval: room for a loaded machine
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() (int, string) {
		resp, err := cl.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Backend-Id")
	}
	// Wait (bounded) until the late backend is out: only "live" answers.
	deadline := time.Now().Add(5 * time.Second)
	for ok := 0; ok < 4; {
		if time.Now().After(deadline) {
			t.Fatal("the down backend was not taken out within 5s")
		}
		if code, id := get(); code == 200 && id == "live" {
			ok++
		} else {
			ok = 0
		}
	}
	// Start it; the prober must bring it back.
	ln := listenLate()
	bctx, bcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { bcancel(); wg.Wait() }()
	h := echo.New(echo.Config{ID: "late", Logger: discardLogger()})
	cfg := server.DefaultConfig()
	cfg.ConnectionsMax = 16
	cfg.Logger = discardLogger()
	srv, err := server.New(h, nil, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(bctx, ln) }()
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, id := get(); id == "late" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the backend was not brought back within 5s of listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpstreamReuseUnderConcurrency: 100 clients in lockstep, more than
// the library's default idle stack (pool.IdlePerUpstreamDefault, 64), keep
// reusing their upstream connections: the backend sees about one
// connection per client, not a new one per burst for every client above
// the idle stack (closed, left in TIME_WAIT, re-dialled). The lb's default
// --idle-per-upstream follows --max-conns for that.
func TestUpstreamReuseUnderConcurrency(t *testing.T) {
	const clients, rounds = 100, 15
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go be.Serve(ln)
	defer be.Close()
	addr, _ := startLB(t, "--backends", ln.Addr().String(), "--max-conns", "128", "--no-health")
	trs := make([]*http.Transport, clients)
	for i := range trs {
		trs[i] = &http.Transport{MaxIdleConnsPerHost: 1}
		defer trs[i].CloseIdleConnections()
	}
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			wg.Go(func() {
				c := &http.Client{Transport: trs[i], Timeout: 10 * time.Second}
				resp, err := c.Get("http://" + addr + "/")
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if n := conns.Load(); n > clients+clients/4 { // the old default of 64 gave 380
		t.Fatalf("%d upstream connections for %d clients x %d rounds: the pool closed and re-dialled them", n, clients, rounds)
	} else {
		t.Logf("%d upstream connections for %d clients x %d rounds", n, clients, rounds)
	}
}

// TestShutdownTimeoutFlag: on SIGTERM a response in flight gets
// --shutdown-timeout to finish: a 1 s trickled download completes within
// 5 s, and is cut at 300 ms.
func TestShutdownTimeoutFlag(t *testing.T) {
	const pieces, piece = 10, 1 << 10
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(pieces*piece))
		for range pieces {
			if _, err := w.Write([]byte(strings.Repeat("x", piece))); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	for _, tc := range []struct {
		timeout string
		whole   bool
	}{{"5s", true}, {"300ms", false}} {
		t.Run(tc.timeout, func(t *testing.T) {
			parent, term := context.WithCancel(context.Background())
			defer term()
			addr, _ := startLBCtx(t, parent, nil, "--backends", ln.Addr().String(), "--no-health", "--shutdown-timeout", tc.timeout)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := br.Peek(1); err != nil { // the body has started
				t.Fatal(err)
			}
			term() // SIGTERM
			body, err := io.ReadAll(resp.Body)
			if tc.whole && (err != nil || len(body) != pieces*piece) {
				t.Fatalf("got %d bytes, err %v: want the whole body", len(body), err)
			}
			if _, err := br.ReadByte(); tc.whole && err != io.EOF {
				t.Fatalf("after the response: %v, want the connection closed", err)
			}
			if !tc.whole && (err == nil || len(body) == pieces*piece) {
				t.Fatalf("got %d bytes, err %v: want the download cut at the deadline", len(body), err)
			}
		})
	}
}

// TestUselessFlagsWarned: flags that can do nothing in the configuration
// given are said so at startup, not ignored in silence: --accept-balance
// without --workers, --client-cert-header without --client-ca.
func TestUselessFlagsWarned(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--accept-balance=false"}, "--accept-balance applies to --workers above 1"},
		{[]string{"--client-cert-header", "X-Forwarded-Client-Cert"}, "--client-cert-header without --client-ca"},
	} {
		_, logs := startLB(t, tc.args...)
		if !strings.Contains(logs.String(), tc.want) {
			t.Errorf("%v: no warning %q; logs:\n%s", tc.args, tc.want, logs)
		}
	}
	if _, logs := startLB(t); strings.Contains(logs.String(), "--accept-balance") || strings.Contains(logs.String(), "--client-cert-header") {
		t.Errorf("a warning without the flags; logs:\n%s", logs)
	}
}
