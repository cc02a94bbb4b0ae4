//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testpki"
)

// TestMain makes this test binary a worker when a master (a test running
// --workers) starts it as one: the master re-executes its own binary.
func TestMain(m *testing.M) {
	if workerIndex() >= 0 || os.Getenv(asMainEnv) == "1" {
		if v := os.Getenv(acceptGraceEnv); v != "" {
			g, err := time.ParseDuration(v)
			if err != nil {
				fmt.Fprintln(os.Stderr, acceptGraceEnv+":", err)
				os.Exit(2)
			}
			acceptGrace = g
		}
		main() // exits
	}
	os.Exit(m.Run())
}

// acceptGraceEnv, when set (a duration), is the acceptGrace of the
// workers a test starts (their processes inherit the test's environment
// and run TestMain).
const acceptGraceEnv = "SERVAL_LB_TEST_ACCEPT_GRACE"

// asMainEnv set to 1 makes this test binary the lb program itself, for
// tests that need a process of its own (signals, its stdout).
const asMainEnv = "SERVAL_LB_TEST_AS_MAIN"

// workerStarted finds the master's "worker started" lines.
var workerStarted = regexp.MustCompile(`msg="worker started" worker=(\d+) pid=(\d+)`)

// workerPids returns the pids the master logged as started, by worker.
func workerPids(logs string) map[int][]int {
	pids := map[int][]int{}
	for _, m := range workerStarted.FindAllStringSubmatch(logs, -1) {
		k, _ := strconv.Atoi(m[1])
		pid, _ := strconv.Atoi(m[2])
		pids[k] = append(pids[k], pid)
	}
	return pids
}

// waitLogs waits (bounded) until cond holds for the logs.
func waitLogs(t *testing.T, logs *syncBuffer, what string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s; logs:\n%s", what, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getOnce makes one request on a new connection and checks it was served
// by an echo backend.
func getOnce(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, body := roundTrip(t, c, bufio.NewReader(c), "GET /w HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || !strings.Contains(body, "Path: /w") {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
}

// TestWorkersShareConnections: with --workers 2, connections are spread
// over both worker processes (each logs the requests it served) and every
// request is answered. Each connection closes after its request, so the
// workers tie for every new one and the first to accept takes it: under
// -race with GOMAXPROCS=1 on a loaded machine, one worker took 40 in a
// row in 110 ms while the other had just started. So requests go on
// (40 at least, for up to 10 s) until both workers served some.
func TestWorkersShareConnections(t *testing.T) {
	addr, logs := startLB(t, "--workers", "2", "--debug")
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	both := func(s string) bool {
		return strings.Contains(s, "worker=0 method=GET path=/w") && strings.Contains(s, "worker=1 method=GET path=/w")
	}
	n := 0
	for deadline := time.Now().Add(10 * time.Second); n < 40 || !both(logs.String()); n++ {
		if time.Now().After(deadline) {
			t.Fatalf("the requests were not spread over both workers (%d made in 10s); logs:\n%s", n, logs)
		}
		getOnce(t, addr)
	}
	// A worker logs a request after answering it: wait for the last lines.
	waitLogs(t, logs, fmt.Sprint(n, " requests logged as 200"), func(s string) bool {
		return strings.Count(s, "method=GET path=/w status=200") >= n
	})
	s := logs.String()
	if got := strings.Count(s, "method=GET path=/w status=200"); got != n {
		t.Errorf("%d requests logged as 200, want %d; logs:\n%s", got, n, s)
	}
}

// TestWorkerRestartedAfterCrash: a worker killed with SIGKILL is started
// again, and connections made meanwhile are served (by the other worker:
// the master clears the dead one's slot of the load table, so the other
// does not leave them to it).
func TestWorkerRestartedAfterCrash(t *testing.T) {
	addr, logs := startLB(t, "--workers", "2")
	waitLogs(t, logs, "two workers started", func(s string) bool { return len(workerPids(s)) == 2 })
	old := workerPids(logs.String())[0][0]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		getOnce(t, addr)
	}
	waitLogs(t, logs, "worker 0 restarted", func(s string) bool { return len(workerPids(s)[0]) == 2 })
	if !strings.Contains(logs.String(), `msg="worker exited" worker=0 pid=`+strconv.Itoa(old)) {
		t.Errorf("the crash was not logged; logs:\n%s", logs)
	}
}

// TestServingWorkerKilledRepeatedly: a worker that has served and is
// then killed again and again soon after each restart (an OOM loop, an
// operator's kill, a request that crashes it) keeps being restarted,
// later each time, even when it never ran workerFastExit: it said it
// served (workerReadyFD), so its start works. Only a worker that never
// got that far stops the balancer.
func TestServingWorkerKilledRepeatedly(t *testing.T) {
	addr, logs := startLB(t, "--workers", "2")
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	for i := range workerFastExitsMax + 1 {
		pids := workerPids(logs.String())[0]
		if err := syscall.Kill(pids[len(pids)-1], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitLogs(t, logs, "worker 0 restarted", func(s string) bool { return len(workerPids(s)[0]) == i+2 })
	}
	getOnce(t, addr)
	if s := logs.String(); strings.Contains(s, "stopping the load balancer") || !strings.Contains(s, "restarting it later") {
		t.Fatalf("logs:\n%s", s)
	}
}

// TestWorkersStopAndReload: SIGHUP reaches every worker; cancelling the
// master stops the workers (they drain) and reaps them before run returns 0.
func TestWorkersStopAndReload(t *testing.T) {
	logs := new(syncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "64", "--workers", "3"}, logs, hup)
	}()
	waitLogs(t, logs, "three workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 3 })
	hup <- syscall.SIGHUP
	waitLogs(t, logs, "SIGHUP passed to every worker", func(s string) bool { return strings.Count(s, "SIGHUP: no --cert") == 3 })
	m := listeningAddr.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no listening line; logs:\n%s", logs)
	}
	getOnce(t, m[1])
	if !listeningHere(t, m[1]) {
		t.Fatal("listeningHere does not see the master's listener")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run returned %d; logs:\n%s", code, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not return within 20s of cancel; logs:\n%s", logs)
	}
	for k, pids := range workerPids(logs.String()) {
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("worker %d (pid %d) still exists after run returned: %v", k, pid, err)
			}
		}
	}
	if n := strings.Count(logs.String(), `msg="load balancer stopped" worker=`); n != 3 {
		t.Errorf("%d workers logged a clean stop, want 3; logs:\n%s", n, logs)
	}
	// Not a dial: once closed, the ephemeral port is free, and on a busy
	// machine another test's listener may take it at once. The workers
	// are gone (above); no listening socket on the port may be ours.
	if listeningHere(t, m[1]) {
		t.Error("the port still accepts connections after run returned")
	}
}

// listeningHere reports whether this process holds a listening TCP
// socket on addr's port (/proc/net/tcp and tcp6 against /proc/self/fd).
func listeningHere(t *testing.T, addr string) bool {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", pn)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address rem_address st ... inode (the tenth field)
			if len(fields) > 9 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && inodes[l] {
			return true
		}
	}
	return false
}

// TestWorkersFailingAtStart: workers that cannot start (here: a missing
// certificate file) make the master give up with exit code 1 instead of
// restarting them forever.
func TestWorkersFailingAtStart(t *testing.T) {
	missing := t.TempDir() + "/missing.pem"
	logs := new(syncBuffer)
	done := make(chan int, 1)
	go func() {
		done <- runWith(context.Background(), []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "8",
			"--workers", "2", "--cert", missing, "--key", missing}, logs, nil)
	}()
	select {
	case code := <-done:
		if code != 1 {
			t.Fatalf("run returned %d, want 1; logs:\n%s", code, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not give up within 30s; logs:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "worker keeps failing at start") {
		t.Errorf("no give-up line; logs:\n%s", logs)
	}
}

// TestWorkersFailingSlowlyAtStart: a worker that fails at its start
// after longer than workerFastExit (a certificate on a slow disk, a
// loaded machine) still failed at start: it never said it serves, and
// the balancer gives up instead of restarting it forever. The
// certificate is a FIFO the test feeds garbage every 2.2 s.
func TestWorkersFailingSlowlyAtStart(t *testing.T) {
	dir := t.TempDir()
	fifo, key := dir+"/cert.pem", dir+"/key.pem"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(workerFastExit + 200*time.Millisecond):
			}
			// Non-blocking: no reader (yet, or any more) is not an error.
			if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.WriteString("not a certificate\n")
				f.Close()
			}
		}
	}()
	defer func() { close(stop); <-fed }()
	logs := new(syncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "8",
			"--workers", "2", "--cert", fifo, "--key", key}, logs, nil)
	}()
	select {
	case code := <-done:
		cancel()
		if code != 1 {
			t.Fatalf("run returned %d, want 1; logs:\n%s", code, logs)
		}
	case <-time.After(60 * time.Second):
		cancel() // the master stops its workers
		<-done
		t.Fatalf("run did not give up within 60s; logs:\n%s", logs)
	}
	if s := logs.String(); !strings.Contains(s, "worker keeps failing at start") || strings.Contains(s, `msg="worker serving"`) {
		t.Errorf("no give-up line, or a worker served; logs:\n%s", s)
	}
}

// TestWorkersFlag: --workers is a bounded count or auto (one per
// processor the process may use).
func TestWorkersFlag(t *testing.T) {
	for _, v := range []string{"0", "-1", strconv.Itoa(workersLimit + 1), "many", ""} {
		var out syncBuffer
		if code := run(context.Background(), []string{"--workers", v}, &out); code != 2 {
			t.Errorf("--workers %q: exit %d, want 2", v, code)
		}
	}
	var out syncBuffer
	o, code, ok := parseFlags([]string{"--workers", "auto"}, &out)
	if want := min(runtime.GOMAXPROCS(0), workersLimit); !ok || o.workers != want {
		t.Errorf("--workers auto: %d workers (ok %v, code %d), want %d; output:\n%s", o.workers, ok, code, want, &out)
	}
}

// TestWorkersPortTaken: two balancers never share a port by mistake: a
// second one on a port the first holds fails to start.
func TestWorkersPortTaken(t *testing.T) {
	addr, _ := startLB(t, "--workers", "2")
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out syncBuffer
	code := run(ctx, []string{"--host", "127.0.0.1", "--port", port, "--workers", "2", "--max-conns", "8"}, &out)
	if code != 1 || !strings.Contains(out.String(), "address already in use") {
		t.Errorf("second balancer on the same port: exit %d, want 1 with \"address already in use\"; logs:\n%s", code, &out)
	}
}

// TestLineSink: whatever the reads' boundaries, the sink writes whole
// lines only (a line longer than its buffer goes in pieces), and the
// last unterminated line at EOF.
func TestLineSink(t *testing.T) {
	var out recordingWriter
	s := &lineSink{w: &out}
	long := strings.Repeat("x", lineBytesMax+10)
	input := "one\ntwo\nthr" + "ee\n" + long + "\nlast"
	s.copyLines(&chunkReader{data: input, sizes: []int{5, 1, 7, 3, 100, lineBytesMax}})
	if got := strings.Join(out.writes, ""); got != input {
		t.Fatalf("forwarded %d bytes, want the %d read", len(got), len(input))
	}
	for i, w := range out.writes[:len(out.writes)-1] {
		if !strings.HasSuffix(w, "\n") && len(w) != lineBytesMax {
			t.Errorf("write %d %q does not end a line", i, w[:min(len(w), 40)])
		}
	}
	if last := out.writes[len(out.writes)-1]; last != "last" {
		t.Errorf("last write %q, want the unterminated last line", last)
	}
}

type recordingWriter struct{ writes []string }

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// chunkReader returns data in reads of the given sizes (the last size
// repeats).
type chunkReader struct {
	data  string
	sizes []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, io.EOF
	}
	n := r.sizes[0]
	if len(r.sizes) > 1 {
		r.sizes = r.sizes[1:]
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// TestWorkersShareSessionTickets: with TLS termination and several
// workers, a client resumes its TLS session whichever worker its next
// connection reaches: the workers derive their session ticket keys from
// one seed the master hands them. Every connection after the first
// resumes, and the connections reach both workers.
func TestWorkersShareSessionTickets(t *testing.T) {
	ca := testpki.NewCA(t, "lb-tickets-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "lb", Names: loopbackNames})
	addr, logs := startLB(t, "--workers", "2", "--cert", cert, "--key", key, "--debug")
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool(), ClientSessionCache: tls.NewLRUClientSessionCache(8)},
		DisableKeepAlives: true, // a new connection, and a new handshake, per request
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	const conns = 24
	for i := range conns {
		status, _, st := get(t, c, "https://"+addr+"/t")
		if status != 200 || st == nil {
			t.Fatalf("connection %d: status %d, TLS %v", i, status, st != nil)
		}
		if i > 0 && !st.DidResume {
			t.Errorf("connection %d: a full handshake, not a resumption", i)
		}
	}
	waitLogs(t, logs, "every request logged", func(s string) bool { return strings.Count(s, "method=GET path=/t status=200") >= conns })
	if s := logs.String(); !strings.Contains(s, "worker=0 method=GET path=/t") || !strings.Contains(s, "worker=1 method=GET path=/t") {
		t.Errorf("the connections did not reach both workers; logs:\n%s", s)
	}
}

// TestWorkersDrainRefusesNew: once the balancer is told to stop, a new
// connection is refused at once, while a request in flight finishes:
// the master closes its copies of the listening sockets too (before, the
// kernel went on completing connections nobody would accept until the
// last worker exited, and their clients waited, then were reset).
func TestWorkersDrainRefusesNew(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		w.Write([]byte("done\n"))
	}))
	defer slow.Close()
	defer close(release)
	logs := new(syncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "16", "--workers", "2",
			"--no-health", "--shutdown-timeout", "20s", "--backends", slow.Listener.Addr().String()}, logs, nil)
	}()
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	m := listeningAddr.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no listening line; logs:\n%s", logs)
	}
	addr := m[1]
	inflight := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 20 * time.Second}
		resp, err := c.Get("http://" + addr + "/slow")
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- resp.Status + " " + string(b)
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the backend")
	}
	cancel() // SIGTERM
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			// Refused, or reset when it met a socket as it closed: at
			// once either way, never left waiting.
			if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("new connection during the drain: %v, want connection refused", err)
			}
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("new connections still accepted 5s into the drain; logs:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("run returned with a request in flight")
	default:
	}
	release <- struct{}{}
	if got := <-inflight; got != "200 OK done\n" {
		t.Fatalf("the request in flight got %q", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run returned %d; logs:\n%s", code, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not return; logs:\n%s", logs)
	}
}

// TestWorkersBalanceConnections: with --workers 2, long-lived
// connections end up split evenly between the workers (they take new
// ones in turn, the least loaded first), whatever their addresses. The
// workers get an accept grace of a second instead of 500 µs (nobody is
// stuck here): under -race on a loaded two-core machine the worker whose
// turn it was is often kept off the processor past 500 µs, and the other
// then rightly takes the connection (measured: 6 and 14, and 19 and 1,
// of 20). What is checked here is the turn taking, not the grace.
func TestWorkersBalanceConnections(t *testing.T) {
	t.Setenv(acceptGraceEnv, "1s")
	addr, logs := startLB(t, "--workers", "2", "--metrics-addr", "127.0.0.1:0")
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	maddr := metricsAddr(t, logs)
	const n = 20
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	text := scrape(t, maddr)
	a := sumSeries(text, `serval_connections_active{worker="0"}`)
	b := sumSeries(text, `serval_connections_active{worker="1"}`)
	// Exact halves unless a worker was kept off the processor past the
	// accept grace (a loaded machine): allow that twice.
	if a+b != n || a-b > 4 || b-a > 4 {
		t.Fatalf("%d connections held: %v in worker 0, %v in worker 1", n, a, b)
	}
}

// TestWorkersAcceptRace: --accept-balance=false leaves the workers to
// race for each new connection on the shared socket; they all serve.
func TestWorkersAcceptRace(t *testing.T) {
	addr, logs := startLB(t, "--workers", "2", "--accept-balance=false")
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	for range 10 {
		getOnce(t, addr)
	}
}

// TestWorkersGroupSignalDrains: a SIGTERM sent to the whole process
// group (systemd's default KillMode=control-group on "systemctl stop",
// a terminal's Ctrl-C, kill -- -PGID) reaches the master and every
// worker at once; the workers must drain like the master, not take the
// master's own SIGTERM that follows as a second signal and end at once.
// Before, a request in flight was cut within milliseconds of "systemctl
// stop" whatever --shutdown-timeout said (found by sending SIGTERM to
// the process group during a rate-limited 50 MiB download: cut after
// 12 MiB, the worker gone without its "load balancer stopped" line).
func TestWorkersGroupSignalDrains(t *testing.T) {
	logs, exited := drainsAfter(t, 3, func(master int) error { return syscall.Kill(-master, syscall.SIGTERM) })
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit %v after the drain, want 0; logs:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit 15s after the drain's end; logs:\n%s", logs)
	}
	if n := strings.Count(logs.String(), `msg="load balancer stopped" worker=`); n != 2 {
		t.Errorf("%d workers logged a clean stop, want 2; logs:\n%s", n, logs)
	}
}

// TestWorkersDrainWhenMasterKilled: a master killed with SIGKILL (an OOM
// kill, a crash) leaves its workers to drain what they serve, as
// documented. Before, they learnt of it through PR_SET_PDEATHSIG, which
// the kernel sends again each time one of the dying master's threads
// exits: a worker took the second SIGTERM of that one death as an
// operator's second signal and ended at once, cutting a download in
// flight in 3 of 4 tries by hand. Three tries here: one that passed by
// luck would not hide the defect.
func TestWorkersDrainWhenMasterKilled(t *testing.T) {
	for try := range 3 {
		var pids []int
		logs, exited := drainsAfter(t, 1, func(master int) error { return syscall.Kill(master, syscall.SIGKILL) })
		<-exited
		for _, p := range workerPids(logs.String()) {
			pids = append(pids, p...)
		}
		// Drained, they exit (reparented, they are not this test's to wait for).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			alive := 0
			for _, pid := range pids {
				if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
					alive++
				}
			}
			if alive == 0 {
				break
			}
			if time.Now().After(deadline) {
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Fatalf("try %d: %d workers still running 10s after their drain; logs:\n%s", try, alive, logs)
			}
		}
	}
}

// drainsAfter starts the balancer (2 workers, --shutdown-timeout 20s) as
// a process of its own, in a process group of its own, holds a request at
// its backend, runs stop(master's pid) and checks that the request is
// still waiting a second later and, once the backend answers, answered
// whole. draining is how many "stopping:" lines stop must bring.
// It returns the logs and the master's exit (the caller receives it).
func drainsAfter(t *testing.T, draining int, stop func(master int) error) (*syncBuffer, <-chan error) {
	t.Helper()
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		w.Write([]byte("done\n"))
	}))
	t.Cleanup(slow.Close)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)

	cmd := exec.Command(os.Args[0], "--host", "127.0.0.1", "--port", "0", "--max-conns", "16", "--workers", "2",
		"--no-health", "--shutdown-timeout", "20s", "--backends", slow.Listener.Addr().String())
	logs, exited := startMain(t, cmd)
	master := cmd.Process.Pid
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	m := listeningAddr.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no listening line; logs:\n%s", logs)
	}
	inflight := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 25 * time.Second}
		resp, err := c.Get("http://" + m[1] + "/slow")
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- resp.Status + " " + string(b)
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("the slow request did not reach the backend; logs:\n%s", logs)
	}
	if err := stop(master); err != nil {
		t.Fatal(err)
	}
	if draining > 1 {
		waitLogs(t, logs, "master and workers draining", func(s string) bool { return strings.Count(s, `msg="stopping:`) == draining })
	}
	// Whatever could end the request (the master's SIGTERM that follows
	// a group's, the death signals of a killed master's threads) comes
	// at once: give it time to do harm.
	select {
	case got := <-inflight:
		t.Fatalf("the request in flight ended during the drain, before its backend answered: %q; logs:\n%s", got, logs)
	case <-time.After(time.Second):
	}
	releaseAll()
	select {
	case got := <-inflight:
		if got != "200 OK done\n" {
			t.Fatalf("the request in flight got %q; logs:\n%s", got, logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no answer 10s after the backend's; logs:\n%s", logs)
	}
	return logs, exited
}

// TestWorkerRestartedFromOwnProgram: a worker restarted after a crash
// runs the master's own program, not what its path names by then. A
// package upgrade or deploy replaces the file (a rename over it) while
// the balancer runs; before, the restarted worker ran the new file under
// the old master (found by replacing the binary with a script and
// killing a worker: the script ran as worker 0, in a restart loop).
func TestWorkerRestartedFromOwnProgram(t *testing.T) {
	dir := t.TempDir()
	prog := dir + "/lb"
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prog, "--host", "127.0.0.1", "--port", "0", "--max-conns", "16", "--workers", "2", "--no-health",
		"--backends", "127.0.0.1:1")
	logs, _ := startMain(t, cmd)
	waitLogs(t, logs, "two workers serving", func(s string) bool { return strings.Count(s, `msg="worker serving"`) == 2 })
	// The upgrade: a new file renamed over the old one.
	if err := os.WriteFile(prog+".new", []byte("#!/bin/sh\necho replaced program ran\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(prog+".new", prog); err != nil {
		t.Fatal(err)
	}
	old := workerPids(logs.String())[0][0]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, logs, "worker 0 restarted and serving", func(s string) bool {
		return strings.Contains(s, "replaced program ran") || strings.Count(s, `msg="worker serving" worker=0`) == 2
	})
	if s := logs.String(); strings.Contains(s, "replaced program ran") {
		t.Fatalf("the restarted worker ran the file now at the program's path; logs:\n%s", s)
	}
}

// TestWorkersSurviveHUPAtStart: reload requests that come while workers
// start do not kill them. Before, the master passed SIGHUP on to a worker
// whose runtime had not yet set its handlers up, and SIGHUP's default
// action ended it (found by sending SIGHUP to the master every 0.5 ms
// around a worker's restart: "worker exited ... err="signal: hangup"",
// 5 times in 3 restarts). A worker still starting gets the reload once
// it serves instead.
func TestWorkersSurviveHUPAtStart(t *testing.T) {
	logs := new(syncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "16", "--workers", "2",
			"--no-health", "--backends", "127.0.0.1:1"}, logs, hup)
	}()
	serving := func(s string) bool { return strings.Count(s, `msg="worker serving"`) >= 2 }
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { // reload requests all through the workers' start
		defer close(sent)
		for {
			select {
			case <-stop:
				return
			case hup <- syscall.SIGHUP:
			default:
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !serving(logs.String()) && !strings.Contains(logs.String(), "worker exited"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	close(stop)
	<-sent
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not return; logs:\n%s", logs)
	}
	s := logs.String()
	if strings.Contains(s, "worker exited") || !serving(s) {
		t.Fatalf("a worker died at its start, or they did not both serve; logs:\n%s", s)
	}
	if !strings.Contains(s, "SIGHUP: no --cert and no --access-log file, nothing to reload") {
		t.Errorf("no worker got a reload; logs:\n%s", s)
	}
}

// startMain starts cmd, the test binary run as lb (asMainEnv is set
// here), in a process group of its own (the master and its workers),
// with its stdout collected line by line in logs; exited receives its
// exit status once. At cleanup the group, if the master still runs, is
// killed and the master reaped.
func startMain(t *testing.T, cmd *exec.Cmd) (logs *syncBuffer, exited <-chan error) {
	t.Helper()
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs = new(syncBuffer)
	ex, gone := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(gone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
		}
		ex <- cmd.Wait()
	}()
	group := -cmd.Process.Pid
	t.Cleanup(func() {
		select {
		case <-gone:
		default:
			syscall.Kill(group, syscall.SIGKILL)
			<-gone
		}
	})
	return logs, ex
}
