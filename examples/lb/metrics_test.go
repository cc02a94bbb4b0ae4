package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testnet"
)

// scrape returns the /metrics text of addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// sumSeries adds the values of the series of name in text.
func sumSeries(text, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// TestMetricsEndpoint: --metrics-addr serves Prometheus text with the
// requests by status, the upstream attempts (per backend, summing to the
// requests), health, the pool, and the Go runtime's own.
func TestMetricsEndpoint(t *testing.T) {
	addr, logs := startLB(t, "--metrics-addr", "127.0.0.1:0")
	maddr := metricsAddr(t, logs)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The responses' bytes as they came over the socket (one at a time:
	// nothing is read past the fourth).
	var received int64
	br := bufio.NewReader(countReader{c, &received})
	const req = "GET /m HTTP/1.1\r\nHost: t\r\n\r\n"
	for range 4 {
		roundTrip(t, c, br, req)
	}
	// The log runs after the response: wait for the fourth to be counted.
	deadline := time.Now().Add(10 * time.Second)
	var text string
	for {
		text = scrape(t, maddr)
		if sumSeries(text, `serval_requests_total{code="200"}`) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := sumSeries(text, `serval_requests_total{code="200"}`); got != 4 {
		t.Fatalf("requests_total{code=200} = %v, want 4:\n%s", got, text)
	}
	if got := sumSeries(text, "serval_upstream_attempts_total"); got != 4 {
		t.Fatalf("upstream attempts sum to %v, want 4", got)
	}
	if n := strings.Count(text, "serval_upstream_healthy{upstream="); n != 2 || sumSeries(text, "serval_upstream_healthy") != 2 {
		t.Fatalf("%d health series, %v healthy; want 2 and 2", n, sumSeries(text, "serval_upstream_healthy"))
	}
	for _, name := range []string{"serval_connections_opened_total", "serval_request_duration_seconds_count",
		"serval_pool_hits_total", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(text, "\n"+name) {
			t.Fatalf("no %s in:\n%s", name, text)
		}
	}
	if got := sumSeries(text, "serval_request_duration_seconds_count"); got != 4 {
		t.Fatalf("duration count %v, want 4", got)
	}
	if in, out := sumSeries(text, "serval_request_bytes_total"), sumSeries(text, "serval_response_bytes_total"); in != 4*float64(len(req)) || out != float64(received) {
		t.Fatalf("request bytes %v, response bytes %v; want %d and %d", in, out, 4*len(req), received)
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n *int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// TestMetricsWorkers: under --workers, the master serves every worker's
// series on --metrics-addr, each labelled with its worker (the Go
// runtime's and the process's too), its own process metrics as
// worker="master"; the requests the workers served add up; /readyz and
// /healthz answer for the whole balancer.
func TestMetricsWorkers(t *testing.T) {
	addr, logs := startLB(t, "--workers", "2", "--metrics-addr", "127.0.0.1:0")
	maddr := metricsAddr(t, logs)
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	const n = 30
	for range n {
		getOnce(t, addr)
	}
	served := regexp.MustCompile(`(?m)^serval_requests_total\{code="200",worker="([01])"\} (\S+)$`)
	deadline := time.Now().Add(10 * time.Second)
	var text string
	for {
		text = scrape(t, maddr)
		sum := 0.0
		for _, m := range served.FindAllStringSubmatch(text, -1) {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
		if sum == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests served add up to %v, want %d:\n%s", sum, n, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{`go_goroutines{worker="0"}`, `go_goroutines{worker="1"}`,
		`serval_upstream_healthy{upstream="127.0.0.1:`, `process_cpu_seconds_total{worker="master"}`,
		`process_cpu_seconds_total{worker="1"}`} {
		if !strings.Contains(text, want) {
			t.Fatalf("no %s in:\n%s", want, text)
		}
	}
	if c := strings.Count(text, "# TYPE go_goroutines "); c != 1 {
		t.Fatalf("go_goroutines has %d TYPE lines, want 1 (one family for all workers)", c)
	}
	if code, body := httpGet(t, maddr, "/readyz"); code != 200 || !strings.Contains(body, "2 of 2 workers") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := httpGet(t, maddr, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}

// httpGet returns the status and body of GET http://addr+path.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyz: /healthz answers while the balancer runs; /readyz answers
// 200 while a backend is in rotation and 503 once health checks took the
// last one out.
func TestReadyz(t *testing.T) {
	_, logs := startLB(t, "--metrics-addr", "127.0.0.1:0")
	maddr := metricsAddr(t, logs)
	if code, body := httpGet(t, maddr, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, maddr, "/readyz"); code != 200 || !strings.Contains(body, "2 of 2") {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	dead := testnet.RefusingAddr(t)
	_, logs2 := startLB(t, "--metrics-addr", "127.0.0.1:0", "--backends", dead, "--health-interval", "50ms", "--unhealthy-threshold", "1")
	maddr2 := metricsAddr(t, logs2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, maddr2, "/readyz")
		if code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz stayed %d %q with the only backend dead", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := httpGet(t, maddr2, "/healthz"); code != 200 {
		t.Fatalf("/healthz %d with no backend in rotation, want 200 (the process is alive)", code)
	}
}

// TestReadyzTryAll: with --all-unhealthy try-all the balancer serves
// with every backend out (it tries them all), so /readyz stays 200 then:
// a 503 had whatever is in front take every balancer out at once, the
// total outage try-all is chosen to avoid.
func TestReadyzTryAll(t *testing.T) {
	dead := testnet.RefusingAddr(t)
	_, logs := startLB(t, "--metrics-addr", "127.0.0.1:0", "--backends", dead, "--health-interval", "50ms",
		"--unhealthy-threshold", "1", "--all-unhealthy", "try-all")
	maddr := metricsAddr(t, logs)
	waitLogs(t, logs, "prober: upstream unhealthy", func(s string) bool {
		return strings.Contains(s, "prober: upstream unhealthy")
	})
	if code, body := httpGet(t, maddr, "/metrics"); code != 200 || !strings.Contains(body, `serval_upstream_healthy{upstream="`+dead+`"} 0`) {
		t.Fatalf("/metrics: %d, the backend not shown out", code)
	}
	if code, body := httpGet(t, maddr, "/readyz"); code != 200 || !strings.Contains(body, "0 of 1") {
		t.Fatalf("/readyz with try-all and every backend out: %d %q, want 200", code, body)
	}
}

// TestTrustForwardedAndVia: --trust-forwarded keeps the incoming
// X-Forwarded-For chain (appending the client), and --via names the
// balancer in Via both ways; by default the chain is replaced.
func TestTrustForwardedAndVia(t *testing.T) {
	req := "GET /f HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"
	for _, tc := range []struct {
		args     []string
		xff, via string
	}{
		{nil, "X-Forwarded-For: 127.0.0.1\n", ""},
		{[]string{"--trust-forwarded", "--via", "edge1"}, "X-Forwarded-For: 10.9.8.7, 127.0.0.1\n", "1.1 edge1"},
	} {
		addr, _ := startLB(t, tc.args...)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := roundTrip(t, c, bufio.NewReader(c), req)
		c.Close()
		if !strings.Contains(body, tc.xff) {
			t.Fatalf("%v: the backend saw no %q in:\n%s", tc.args, tc.xff, body)
		}
		if got := resp.Header.Get("Via"); got != tc.via {
			t.Fatalf("%v: response Via %q, want %q", tc.args, got, tc.via)
		}
		if tc.via != "" && !strings.Contains(body, "Via: "+tc.via+"\n") {
			t.Fatalf("%v: the backend saw no Via %q in:\n%s", tc.args, tc.via, body)
		}
	}
}

// metricsLine is the log line of the metrics listener (a port the kernel
// picked: a port freed for the test could be taken by another meanwhile).
var metricsLine = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// metricsAddr waits (bounded) for the metrics listener's log line and
// returns its address.
func metricsAddr(t *testing.T, logs *syncBuffer) string {
	t.Helper()
	var addr string
	waitLogs(t, logs, "metrics listening", func(s string) bool {
		if m := metricsLine.FindStringSubmatch(s); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return addr
}

// TestReadyzDraining: once the drain starts, /readyz answers 503 (a
// Service in front stops sending new connections) while an in-flight
// request finishes, and the drain is logged.
func TestReadyzDraining(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	parent, term := context.WithCancel(context.Background())
	defer term()
	addr, logs := startLBCtx(t, parent, nil, "--backends", ln.Addr().String(), "--no-health", "--metrics-addr", "127.0.0.1:0")
	maddr := metricsAddr(t, logs)
	ready := func() int {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + maddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != 200 {
		t.Fatalf("/readyz %d before the drain", code)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/slow")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	term() // SIGTERM
	waitLog(t, logs, "stopping: no new connections", 1)
	if code := ready(); code != 503 {
		t.Errorf("/readyz %d during the drain, want 503", code)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Fatalf("the in-flight request: %d", code)
	}
}

// TestFailuresCount5xxWhenPassive: with --passive-5xx a 5xx counts
// against health, and serval_upstream_failures_total counts it too;
// without it a 5xx is an answer, counted as none.
func TestFailuresCount5xxWhenPassive(t *testing.T) {
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	for _, passive := range []bool{true, false} {
		args := []string{"--backends", ln.Addr().String(), "--health-interval", "0", "--unhealthy-threshold", "100", "--metrics-addr", "127.0.0.1:0"}
		if passive {
			args = append(args, "--passive-5xx")
		}
		addr, logs := startLB(t, args...)
		maddr := metricsAddr(t, logs)
		for range 3 {
			if code, _ := httpGet(t, addr, "/"); code != 503 {
				t.Fatalf("status %d", code)
			}
		}
		// The failure is counted when the exchange ends, after the
		// response reached the client; requests_total is counted after
		// that on the same goroutine, so once it says 3 the failures
		// are all in.
		var text string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			text = scrape(t, maddr)
			if sumSeries(text, `serval_requests_total{code="503"}`) == 3 || time.Now().After(deadline) {
				break
			}
		}
		got := sumSeries(text, "serval_upstream_failures_total")
		if want := map[bool]float64{true: 3, false: 0}[passive]; got != want {
			t.Errorf("--passive-5xx %v: upstream failures %v, want %v", passive, got, want)
		}
	}
}
