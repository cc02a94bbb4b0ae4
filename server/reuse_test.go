package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testnet"
	"github.com/servalproxy/serval/pool"
)

// TestUpstreamReuse: 100k requests (10k under the race detector) over 50
// keep-alive client connections open about 50 upstream connections, not
// one per request: no TIME_WAIT storm, the pool hands back what it took.
func TestUpstreamReuse(t *testing.T) {
	const clients = 50
	total := 100_000
	if raceEnabled || testing.Short() {
		total = 10_000
	}
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("0123456789abcdef")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)

	pc := pool.DefaultConfig(1)
	p, err := pool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg := testConfig()
	cfg.ConnectionsMax = clients + 4
	// Not a test of the timeouts: testConfig's 2 s ones are too tight for
	// 50 busy connections under the race detector on a loaded two-core
	// machine (a client connection was reset 32 s in).
	cfg.HeaderReadTimeout, cfg.IdleTimeout = 30*time.Second, 30*time.Second
	cfg.BodyReadTimeout, cfg.WriteTimeout = 30*time.Second, 30*time.Second
	cfg.Logger = discardLogger()
	m := &countMetrics{}
	_, ts := serve(t, &minimalUp{up: &up}, p, m, cfg)

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- reuseClient(ts.addr, total/clients, len(body))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			var closes []string
			for r := range m.closed {
				if n := m.closed[r].Load(); n > 0 {
					closes = append(closes, serval.CloseReason(r).String()+"="+strconv.FormatInt(n, 10))
				}
			}
			t.Fatalf("%v (connections closed so far: %v)", err, closes)
		}
	}
	// Each client connection holds at most one upstream connection at a
	// time; a few more may be dialled when a released one races an
	// acquire, never one per request.
	if n := accepted.Load(); n > clients+clients/10 {
		t.Fatalf("%d upstream connections for %d requests over %d client connections", n, total, clients)
	} else {
		t.Logf("%d requests over %d client connections: %d upstream connections", total, clients, n)
	}
}

// reuseClient sends n keep-alive GETs on one connection and checks each
// response.
func reuseClient(addr string, n, bodyLen int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	req := []byte("GET /r HTTP/1.1\r\nHost: reuse\r\n\r\n")
	for i := range n {
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(b) != bodyLen {
			return &reuseError{i: i, status: resp.StatusCode, n: len(b), err: err}
		}
	}
	return nil
}

type reuseError struct {
	i, status, n int
	err          error
}

func (e *reuseError) Error() string {
	msg := "request " + strconv.Itoa(e.i) + ": status " + strconv.Itoa(e.status) + ", " + strconv.Itoa(e.n) + " body bytes"
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg
}

// TestUpstreamCloseTimeWait: an upstream that answers Connection: close
// and closes its side a moment later (as servers do: the FIN follows the
// answer's last byte) keeps the TIME_WAIT state of every connection; the
// proxy's side closes after the upstream's FIN, so its ephemeral ports
// are free at once (a proxy closing first holds each for a minute, and
// runs out of ports toward an upstream that closes every connection).
// The client's keep-alive connection is unaffected.
func TestUpstreamCloseTimeWait(t *testing.T) {
	const requests = 5
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backendPort := ln.Addr().(*net.TCPAddr).Port
	proxyPorts := make(chan int, requests)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			proxyPorts <- c.RemoteAddr().(*net.TCPAddr).Port
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"))
				time.Sleep(30 * time.Millisecond) // the FIN comes after the answer
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	up := serval.NewUpstream("127.0.0.1", uint16(backendPort), 0)
	pc := pool.DefaultConfig(1)
	pc.ClosingGrace = testTimeout // the backend's 30 ms, however loaded the machine
	p, err := pool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	_, ts := startWith(t, &minimalUp{up: &up}, p, testConfig())
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for i := range requests {
		send(t, c, get("/r"+strconv.Itoa(i)))
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.Close {
			t.Fatalf("request %d: %d, close %v", i, r.StatusCode, r.Close)
		}
	}
	for range requests {
		port := <-proxyPorts
		deadline := time.Now().Add(testTimeout)
		for {
			st, ok := testnet.TCPState(t, port, backendPort)
			if ok && st == testnet.TCPTimeWait {
				t.Fatalf("the proxy's side of the upstream connection from port %d is in TIME_WAIT", port)
			}
			if !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the proxy's side of the upstream connection from port %d stays in state %#x", port, st)
			}
			time.Sleep(time.Millisecond)
		}
		if st, ok := testnet.TCPState(t, backendPort, port); !ok || st != testnet.TCPTimeWait {
			t.Fatalf("the upstream's side: state %#x (found %v), want TIME_WAIT", st, ok)
		}
	}
	if st := p.Stats(); st.ClosedAfterPeer != requests || st.Closing != 0 {
		t.Fatalf("pool stats %+v", st)
	}
}
