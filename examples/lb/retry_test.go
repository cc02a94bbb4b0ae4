package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shedder is a backend that takes connections and reads each request
// head, then drops the connection without a byte of answer: reset
// (SO_LINGER 0) when rst, else closed. It is what a crashing backend, or
// one shedding connections at its own limit, looks like from the proxy.
type shedder struct {
	ln      net.Listener
	rst     bool
	interim bool         // send a 103 Early Hints before dropping the connection
	seen    atomic.Int64 // request heads read
	wg      sync.WaitGroup
}

func startShedder(t *testing.T, rst bool) *shedder {
	t.Helper()
	return startShedderInterim(t, rst, false)
}

// startShedderInterim is startShedder whose backend sends a 103 Early
// Hints before dropping the connection when interim is set.
func startShedderInterim(t *testing.T, rst, interim bool) *shedder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &shedder{ln: ln, rst: rst, interim: interim}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *shedder) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	s.seen.Add(1)
	if s.interim {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
	}
	if s.rst {
		c.(*net.TCPConn).SetLinger(0)
	}
}

// TestRetryIdempotentWithoutAnswer: a backend that drops connections
// without answering costs idempotent requests nothing (each goes to the
// live backend), while a POST sent to it gets 502 (it may have acted on
// the request), and with --retries 0 so does a GET. Both a close and a
// reset. --no-health keeps the failing backend in rotation, so every
// other request meets it.
func TestRetryIdempotentWithoutAnswer(t *testing.T) {
	live := echoBackends(t, "live")
	for _, rst := range []bool{false, true} {
		t.Run("rst="+strconv.FormatBool(rst), func(t *testing.T) {
			shed := startShedder(t, rst)
			backends := shed.ln.Addr().String() + "," + live
			do := func(cl *http.Client, addr, method string, i int) (int, string) {
				t.Helper()
				body := "body " + method + " " + strconv.Itoa(i)
				req, err := http.NewRequest(method, "http://"+addr+"/r"+strconv.Itoa(i), strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if method == http.MethodGet {
					req.Body, req.ContentLength = nil, 0
				}
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatalf("%s %d: %v", method, i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && method != http.MethodGet && !strings.Contains(string(b), body) {
					t.Fatalf("%s %d: the body did not reach the backend: %q", method, i, b)
				}
				return resp.StatusCode, string(b)
			}

			addr, logs := startLB(t, "--backends", backends, "--no-health")
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for i := range 10 {
				for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
					if code, b := do(cl, addr, m, i); code != 200 || !strings.Contains(b, "live") {
						t.Fatalf("%s %d: status %d from %q, want 200 from the live backend; logs:\n%s", m, i, code, b, logs)
					}
				}
			}
			if shed.seen.Load() == 0 {
				t.Fatal("no request reached the failing backend: the test proves nothing")
			}
			if !strings.Contains(logs.String(), "asking for a retry on another") {
				t.Errorf("the retries were not logged; logs:\n%s", logs)
			}
			var got502, got200 int
			for i := range 10 {
				switch code, _ := do(cl, addr, http.MethodPost, i); code {
				case 502:
					got502++
				case 200:
					got200++
				default:
					t.Fatalf("POST %d: status %d", i, code)
				}
			}
			if got502 == 0 || got200 == 0 {
				t.Fatalf("POSTs: %d answered 502, %d 200; want both (half of them meet the failing backend)", got502, got200)
			}

			addr0, _ := startLB(t, "--backends", backends, "--no-health", "--retries", "0")
			got502 = 0
			for i := range 10 {
				if code, _ := do(cl, addr0, http.MethodGet, i); code == 502 {
					got502++
				}
			}
			if got502 == 0 {
				t.Fatal("--retries 0: no GET answered 502, yet half met the failing backend")
			}
		})
	}
}

// TestNoRetryAfterInterim: a backend that sends an interim response (a
// 103) and then drops the connection had the request and began to answer
// it: the client has the 103, and the request is answered 502, not sent
// to another backend (whose own 103 and answer would follow the first
// backend's 103). Both a close and a reset.
func TestNoRetryAfterInterim(t *testing.T) {
	live := echoBackends(t, "live")
	for _, rst := range []bool{false, true} {
		t.Run("rst="+strconv.FormatBool(rst), func(t *testing.T) {
			shed := startShedderInterim(t, rst, true)
			addr, logs := startLB(t, "--backends", shed.ln.Addr().String()+","+live, "--no-health")
			var cut int
			for i := range 4 { // round robin: half meet the shedder
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "GET /r"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: t\r\n\r\n")
				br := bufio.NewReader(c)
				var statuses []int
				for {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("GET %d: %v after %v; logs:\n%s", i, err, statuses, logs)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses = append(statuses, resp.StatusCode)
					if resp.StatusCode >= 200 {
						break
					}
				}
				c.Close()
				switch {
				case len(statuses) == 1 && statuses[0] == 200:
				case len(statuses) == 2 && statuses[0] == 103 && statuses[1] == 502:
					cut++
				default:
					t.Fatalf("GET %d: statuses %v, want [200] from the live backend or [103 502] (more means a retry after the 103); logs:\n%s", i, statuses, logs)
				}
			}
			if cut == 0 || shed.seen.Load() == 0 {
				t.Fatalf("no request met the failing backend (%d cut, %d seen): the test proves nothing", cut, shed.seen.Load())
			}
			if strings.Contains(logs.String(), "asking for a retry on another") {
				t.Errorf("a retry was asked for after the interim response; logs:\n%s", logs)
			}
		})
	}
}

// TestRetryWithObservability: the flags that wrap the balancer's handler
// (--metrics-addr, --access-log, --debug) keep its retries: a GET that
// meets a backend dropping connections is answered by the live one.
func TestRetryWithObservability(t *testing.T) {
	live := echoBackends(t, "live")
	shed := startShedder(t, false)
	backends := shed.ln.Addr().String() + "," + live
	for _, extra := range [][]string{
		{"--metrics-addr", "127.0.0.1:0"},
		{"--access-log", "-"},
		{"--debug"},
	} {
		t.Run(extra[0], func(t *testing.T) {
			before := shed.seen.Load()
			addr, logs := startLB(t, append([]string{"--backends", backends, "--health-interval", "0", "--unhealthy-threshold", "100"}, extra...)...)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for i := range 6 {
				resp, err := cl.Get("http://" + addr + "/r" + strconv.Itoa(i))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(b), "live") {
					t.Fatalf("GET %d: status %d from %q, want 200 from the live backend; logs:\n%s", i, resp.StatusCode, b, logs)
				}
			}
			if shed.seen.Load() == before {
				t.Fatal("no request reached the failing backend: the test proves nothing")
			}
		})
	}
}
