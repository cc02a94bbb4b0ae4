package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testnet"
)

// healthPath is the probe path the test backends count separately.
const healthPath = "/healthz"

// cutPath is answered by a testBackend with a body cut short.
const cutPath = "/cut"

// testBackend is a net/http origin that counts probes and requests, can
// fail its probes on demand, and can be killed and restarted on the same
// address. It answers cutPath with a response cut mid-body.
type testBackend struct {
	t        *testing.T
	id, addr string
	probes   atomic.Int64 // probes since the last (re)start
	hits     atomic.Int64 // proxied requests since the last (re)start
	// probesAtFirstHit is probes when the first request after the last
	// (re)start arrived; -1 before.
	probesAtFirstHit atomic.Int64
	failProbes       atomic.Bool
	srv              *http.Server
	done             chan struct{}
}

// newTestBackend starts a backend on a free loopback port.
func newTestBackend(t *testing.T, id string) *testBackend {
	t.Helper()
	b := &testBackend{t: t, id: id}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(b.kill)
	return b
}

func (b *testBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == healthPath {
		if b.failProbes.Load() {
			w.WriteHeader(500)
			return
		}
		b.probes.Add(1)
		return
	}
	if b.hits.Add(1) == 1 {
		b.probesAtFirstHit.Store(b.probes.Load())
	}
	w.Header().Set("X-Backend-Id", b.id)
	if r.URL.Path == cutPath {
		// A handler that crashes after its head: 10 of the 100 bytes
		// promised, then the connection is cut.
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.Write([]byte("ok\n"))
}

func (b *testBackend) serve(ln net.Listener) {
	b.probes.Store(0)
	b.hits.Store(0)
	b.probesAtFirstHit.Store(-1)
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.t.Errorf("backend %s: %v", b.id, err)
		}
	}()
}

// kill closes the listener and every connection at once, like a crash.
func (b *testBackend) kill() {
	if b.srv == nil {
		return
	}
	b.srv.Close()
	<-b.done
	b.srv = nil
}

// restart listens on the same address again.
func (b *testBackend) restart() {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Skipf("port %s taken meanwhile: %v", b.addr, err)
	}
	b.serve(ln)
}

// fetch GETs / through the balancer and returns status and backend id;
// a transport error is status 0.
func fetch(c *http.Client, addr string, header ...string) (int, string, *http.Response) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend-Id"), resp
}

func plainClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestWeighted: --lb weighted with host:port=weight sends each backend
// its share of the requests; so do weights given without --lb (as nginx
// honours them), with a line saying so.
func TestWeighted(t *testing.T) {
	for _, args := range [][]string{{"--lb", "weighted"}, nil} {
		a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
		addr, logs := startLB(t, append(args, "--backends", a.addr+"=3,"+b.addr+"=1", "--health-path", healthPath)...)
		c := plainClient(t)
		const n = 400
		count := map[string]int{}
		for range n {
			code, id, _ := fetch(c, addr)
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			count[id]++
		}
		// Smooth weighted round robin is exact over whole cycles; allow a
		// cycle of slack.
		if count["a"] < 3*n/4-4 || count["a"] > 3*n/4+4 || count["a"]+count["b"] != n {
			t.Fatalf("%v: weights 3:1 gave %v over %d requests", args, count, n)
		}
		if args == nil && !strings.Contains(logs.String(), "balancing with --lb weighted") {
			t.Errorf("no line about the weights; logs:\n%s", logs)
		}
	}
	// An explicit round robin keeps its word, and says the weights are
	// ignored; so do p2c and the hash policies, which ignore them too.
	for _, policy := range []string{"round-robin", "p2c", "hash:header:X-User"} {
		a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
		_, logs := startLB(t, "--lb", policy, "--backends", a.addr+"=3,"+b.addr+"=1", "--health-path", healthPath)
		waitLog(t, logs, "--lb "+policy+" ignores them", 1)
	}
}

// TestStickyCookie: the first response sets the cookie; requests that
// send it back stay on that backend while cookie-less ones are balanced.
func TestStickyCookie(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	addr, _ := startLB(t, "--sticky-cookie", "srv", "--backends", a.addr+","+b.addr, "--health-path", healthPath)
	c := plainClient(t)
	code, first, resp := fetch(c, addr)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "srv" {
			cookie = ck
		}
	}
	if cookie == nil {
		t.Fatalf("no srv cookie in %v", resp.Header)
	}
	for i := range 10 {
		if _, id, _ := fetch(c, addr, "Cookie", "srv="+cookie.Value); id != first {
			t.Fatalf("request %d with the cookie went to %q, want %q", i, id, first)
		}
	}
	seen := map[string]bool{}
	for range 4 {
		_, id, _ := fetch(c, addr)
		seen[id] = true
	}
	if len(seen) != 2 {
		t.Errorf("cookie-less requests reached %v, want both backends", seen)
	}
}

// loadResult is one request of the load loop.
type loadResult struct {
	at   time.Time
	code int
	id   string
}

// runLoad sends requests from workers goroutines until stop is closed
// and returns every result.
func runLoad(t *testing.T, addr string, workers int, stop <-chan struct{}) func() []loadResult {
	var mu sync.Mutex
	var out []loadResult
	var wg sync.WaitGroup
	c := plainClient(t)
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, id, _ := fetch(c, addr)
				mu.Lock()
				out = append(out, loadResult{time.Now(), code, id})
				mu.Unlock()
			}
		})
	}
	return func() []loadResult { wg.Wait(); return out }
}

// TestKilledBackendUnderLoad: a backend killed under load is taken out
// after a bounded number of failed requests, the other takes all the
// traffic, and after a restart the backend gets traffic again only once
// the success threshold of probes has passed.
//
// The bound: the failure threshold, plus the requests other clients had
// already sent to it when it was marked down (one each), plus one for a
// probe that started before the kill and, succeeding after the first
// failure, reset the streak. Whatever the load's length, the failures stay
// within that.
//
// It runs with --retries 0, so that the requests the dead backend refuses
// fail and count; with the default (retry elsewhere), refused requests go
// to the live backend and only those already written to b when it died
// can fail, within the same bound.
func TestKilledBackendUnderLoad(t *testing.T) {
	for _, retries := range []string{"0", "1"} {
		t.Run("retries="+retries, func(t *testing.T) { killedBackendUnderLoad(t, retries) })
	}
}

func killedBackendUnderLoad(t *testing.T, retries string) {
	const workers, failures, successes = 4, 3, 2
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	// Probes every 200ms: passive checks see the failures first, and the
	// comeback takes at least two probes.
	addr, logs := startLB(t, "--backends", a.addr+","+b.addr, "--health-path", healthPath,
		"--health-interval", "200ms", "--health-timeout", "100ms",
		"--unhealthy-threshold", strconv.Itoa(failures), "--healthy-threshold", strconv.Itoa(successes),
		"--retries", retries)
	stop := make(chan struct{})
	results := runLoad(t, addr, workers, stop)
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	b.kill()
	time.Sleep(300 * time.Millisecond)
	b.restart()
	deadline := time.Now().Add(5 * time.Second)
	for b.hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	all := results()

	failed, toB := 0, 0
	for _, r := range all {
		if r.code != 200 {
			failed++
			if r.at.Before(killed) {
				t.Errorf("request failed before the kill: %+v", r)
			}
		}
		if r.id == "b" && r.at.After(killed) {
			toB++
		}
	}
	t.Logf("%d requests, %d failed, %d reached b after the restart (first after %d probes)",
		len(all), failed, toB, b.probesAtFirstHit.Load())
	if limit := failures + (workers - 1) + 1; failed > limit {
		t.Errorf("%d failed requests after the kill, want at most %d (threshold %d, %d clients)", failed, limit, failures, workers)
	}
	if failed == 0 && retries == "0" {
		t.Errorf("no failed request: the kill was not noticed by requests")
	}
	if b.hits.Load() == 0 {
		t.Fatalf("b got no traffic within 5s of its restart; logs:\n%s", logs)
	}
	if p := b.probesAtFirstHit.Load(); p < successes {
		t.Errorf("b got traffic after %d successful probes, want at least %d", p, successes)
	}
}

// TestAllUnhealthy: when every backend fails its probes, the default
// answers 503 with Retry-After and --all-unhealthy try-all keeps
// sending requests to them.
func TestAllUnhealthy(t *testing.T) {
	for _, policy := range []string{"503", "try-all"} {
		t.Run(policy, func(t *testing.T) {
			a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
			a.failProbes.Store(true)
			b.failProbes.Store(true)
			addr, logs := startLB(t, "--backends", a.addr+","+b.addr, "--health-path", healthPath,
				"--health-interval", "20ms", "--all-unhealthy", policy)
			waitLog(t, logs, "prober: upstream unhealthy", 2)
			c := plainClient(t)
			code, id, resp := fetch(c, addr)
			switch policy {
			case "503":
				if code != 503 || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", code, resp.Header.Get("Retry-After"))
				}
			case "try-all":
				if code != 200 || id == "" {
					t.Fatalf("status %d from %q, want 200 from a backend", code, id)
				}
			}
		})
	}
}

// TestNoHealth: --no-health neither probes nor takes out a dead backend,
// which is what the flag promises: with --retries 0 every other request
// fails; with the default each of those is retried on the live backend.
// The live backend sees the requests and nothing else (its probe path is
// the default, /). A health-checking flag beside it is a usage error
// (TestNoHealthWithHealthFlags).
func TestNoHealth(t *testing.T) {
	a := newTestBackend(t, "a")
	dead := testnet.RefusingAddr(t)
	for _, c := range []struct {
		retries string
		failed  int
	}{{"0", 10}, {"1", 0}} {
		addr, _ := startLB(t, "--no-health", "--backends", a.addr+","+dead, "--connect-timeout", "1s", "--retries", c.retries)
		cl := plainClient(t)
		failed := 0
		for range 20 {
			if code, _, _ := fetch(cl, addr); code != 200 {
				failed++
			}
		}
		if failed != c.failed {
			t.Errorf("--retries %s: %d of 20 requests failed, want %d (no passive checks)", c.retries, failed, c.failed)
		}
	}
	if h := a.hits.Load(); h != 30 {
		t.Errorf("the live backend got %d requests, want the 30 served (probes with --no-health?)", h)
	}
}

// TestNoHealthWithHealthFlags: a flag that configures health checking
// given with --no-health, which turns it off, is a usage error (exit 2)
// naming it, not a setting ignored in silence.
func TestNoHealthWithHealthFlags(t *testing.T) {
	for _, f := range [][]string{{"--health-interval", "1s"}, {"--health-timeout", "1s"}, {"--health-path", "/up"},
		{"--health-status", "200"}, {"--unhealthy-threshold", "2"}, {"--healthy-threshold", "2"}, {"--all-unhealthy", "try-all"}} {
		var out syncBuffer
		if code := run(context.Background(), append([]string{"--no-health", "--port", "0"}, f...), &out); code != 2 {
			t.Errorf("--no-health %s: exit %d, want 2", strings.Join(f, " "), code)
		}
		if !strings.Contains(out.String(), f[0]+" configures health checking, which --no-health turns off") {
			t.Errorf("--no-health %s: output %q", strings.Join(f, " "), out.String())
		}
	}
}

// TestPassive5xx: with --passive-5xx a backend answering 500 is taken
// out after the threshold; without, it keeps its share.
func TestPassive5xx(t *testing.T) {
	ok := newTestBackend(t, "ok")
	bad := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go bad.Serve(ln)
	t.Cleanup(func() { bad.Close() })
	for _, on := range []bool{false, true} {
		t.Run("passive-5xx="+strconv.FormatBool(on), func(t *testing.T) {
			args := []string{"--backends", ok.addr + "," + ln.Addr().String(), "--health-interval", "0"}
			if on {
				args = append(args, "--passive-5xx")
			}
			addr, _ := startLB(t, args...)
			c := plainClient(t)
			n500 := 0
			for range 20 {
				if code, _, _ := fetch(c, addr); code == 500 {
					n500++
				}
			}
			if on && n500 != 3 || !on && n500 != 10 {
				t.Errorf("%d of 20 were 500s with --passive-5xx=%v", n500, on)
			}
		})
	}
}

// TestFailingProbesUnderTraffic: a backend whose health endpoint fails
// (how operators drain or fence one) leaves rotation while its requests
// still succeed; the requests do not cancel the failing probes. And the
// requests it finishes while out do not bring it back: only probes do.
func TestFailingProbesUnderTraffic(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	a.failProbes.Store(true)
	addr, logs := startLB(t, "--backends", a.addr+","+b.addr, "--health-path", healthPath,
		"--health-interval", "50ms")
	c := plainClient(t)
	deadline := time.Now().Add(10 * time.Second)
	for run := 0; run < 40; { // 40 requests in a row answered by b
		if time.Now().After(deadline) {
			t.Fatalf("a backend failing its probes stayed in rotation under traffic; logs:\n%s", logs)
		}
		code, id, _ := fetch(c, addr)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		if id == "b" && strings.Contains(logs.String(), "prober: upstream unhealthy") {
			run++
		} else {
			run = 0
		}
	}
	if strings.Contains(logs.String(), "healthy=true") {
		t.Fatalf("the backend came back without passing probes; logs:\n%s", logs)
	}
	// Probes pass again: it comes back.
	a.failProbes.Store(false)
	waitLog(t, logs, "prober: upstream healthy", 1)
}

// TestHealthStatus: the default probe of / counts any status below 500
// healthy (a backend answering / with 404 is up: an API, a docroot
// without an index), a --health-path the user names must answer 2xx-3xx,
// and --health-status sets the range either way.
func TestHealthStatus(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		healthy bool
	}{
		{nil, true},
		{[]string{"--health-path", "/"}, false},
		{[]string{"--health-path", "/", "--health-status", "200-404"}, true},
		{[]string{"--health-status", "200"}, false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var probes atomic.Int64
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/" {
					probes.Add(1)
					http.NotFound(w, r)
					return
				}
				w.Write([]byte("ok\n"))
			}), ReadHeaderTimeout: 5 * time.Second}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			// Not 20 ms: a probe's timeout is capped at the interval, and
			// with one failure enough, one probe slowed by a loaded
			// machine would take the healthy backend out.
			addr, logs := startLB(t, append([]string{"--backends", ln.Addr().String(), "--health-interval", "250ms",
				"--unhealthy-threshold", "1"}, tc.args...)...)
			if !tc.healthy {
				waitLog(t, logs, "prober: upstream unhealthy", 1)
				if code, _, _ := fetchPath(plainClient(t), addr, "/ok"); code != 503 {
					t.Fatalf("status %d with the backend out, want 503", code)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for probes.Load() < 5 {
				if time.Now().After(deadline) {
					t.Fatalf("%d probes in 10 s", probes.Load())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if strings.Contains(logs.String(), "prober: upstream unhealthy") {
				t.Fatalf("a backend answering its probe 404 was taken out; logs:\n%s", logs)
			}
			if code, _, _ := fetchPath(plainClient(t), addr, "/ok"); code != 200 {
				t.Fatalf("status %d, want 200", code)
			}
		})
	}
	for _, bad := range []string{"600", "abc", "300-200", "99", "200-", "-"} {
		if _, code, ok := parseFlags([]string{"--health-status", bad}, io.Discard); ok || code != 2 {
			t.Errorf("--health-status %q accepted", bad)
		}
	}
}

// fetchPath is fetch for another path.
func fetchPath(c *http.Client, addr, path string) (int, string, *http.Response) {
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", nil
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend-Id"), resp
}

// TestFailTimeout: without active probes (--health-interval 0), a backend
// that passive checks took out is tried with traffic again after
// --fail-timeout (nginx's fail_timeout); with --fail-timeout 0 it stays
// out.
func TestFailTimeout(t *testing.T) {
	for _, ft := range []string{"300ms", "0"} {
		t.Run("fail-timeout="+ft, func(t *testing.T) {
			a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
			addr, _ := startLB(t, "--backends", a.addr+","+b.addr, "--health-interval", "0", "--fail-timeout", ft)
			c := plainClient(t)
			b.kill()
			// Refused connects to b are retried on a, and count against
			// b: three take it out.
			for i := range 10 {
				if code, id, _ := fetch(c, addr); code != 200 || id != "a" {
					t.Fatalf("request %d with b down: %d from %q", i, code, id)
				}
			}
			b.restart()
			deadline := time.Now().Add(3 * time.Second)
			if ft == "0" {
				deadline = time.Now().Add(time.Second)
			}
			for time.Now().Before(deadline) && b.hits.Load() == 0 {
				fetch(c, addr)
				time.Sleep(20 * time.Millisecond)
			}
			switch hits := b.hits.Load(); {
			case ft == "0" && hits != 0:
				t.Fatalf("b got %d requests back without --fail-timeout", hits)
			case ft != "0" && hits == 0:
				t.Fatal("b never came back after --fail-timeout")
			}
		})
	}
}
