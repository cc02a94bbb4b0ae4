package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// start runs the echo backend in-process on a free port and returns its
// base URL; the test's cleanup stops it and checks it exits cleanly.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "32"}, args...), io.Discard, ready)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("run returned %d", code)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15s of cancel")
		}
	})
	select {
	case addr := <-ready:
		return "http://" + strings.Replace(addr, "[::]", "127.0.0.1", 1)
	case code := <-done:
		t.Fatalf("run exited with %d before serving", code)
	case <-time.After(10 * time.Second):
		t.Fatal("echo backend did not start within 10s")
	}
	return ""
}

func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func TestDumpOverHTTP(t *testing.T) {
	base := start(t, "--id", "backend-7")
	c := client(t)
	for i := range 3 { // keep-alive: several requests on one connection
		resp, err := c.Post(base+"/x?y=1", "text/plain", strings.NewReader("hi there"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend-Id") != "backend-7" {
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, resp.Header)
		}
		for _, want := range []string{"=== Echo Backend: backend-7 (port ", "\nMethod: POST\n", "\nPath: /x?y=1\n",
			"\n  Content-Length: 8\n", "\nBody:\nhi there\n"} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("request %d: dump lacks %q:\n%s", i, want, body)
			}
		}
	}
}

func TestChunkedResponse(t *testing.T) {
	base := start(t, "--chunked")
	resp, err := client(t).Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.ContentLength != -1 {
		t.Errorf("framing: TE %v CL %d", resp.TransferEncoding, resp.ContentLength)
	}
	if !bytes.HasPrefix(body, []byte("=== Echo Backend: echo-1 (port ")) {
		t.Errorf("body = %q", body)
	}
}

// TestEchoBodyIntegrity sends bodies of several sizes, with Content-Length
// and chunked, and expects them back byte for byte.
func TestEchoBodyIntegrity(t *testing.T) {
	base := start(t, "--echo-body")
	c := client(t)
	for _, size := range []int{0, 1, 4095, 64 << 10, 1<<20 + 7} {
		want := make([]byte, size)
		rand.Read(want)
		for _, chunked := range []bool{false, true} {
			var body io.Reader = bytes.NewReader(want)
			if chunked {
				body = io.MultiReader(body) // hides the length: net/http sends chunked
			}
			req, _ := http.NewRequest("PUT", base+"/echo", body)
			if !chunked {
				req.ContentLength = int64(size)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("size %d chunked %v: %v", size, chunked, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("size %d chunked %v: reading: %v", size, chunked, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("size %d chunked %v: got %d bytes back, not identical", size, chunked, len(got))
			}
			if !chunked && size > 0 && resp.ContentLength != int64(size) {
				t.Errorf("size %d: response Content-Length %d", size, resp.ContentLength)
			}
		}
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	if code := run(context.Background(), []string{"--help"}, &out, nil); code != 0 {
		t.Errorf("--help exit %d", code)
	}
	for _, f := range []string{"-port", "-id", "-chunked", "-echo-body", "-debug"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage lacks %s", f)
		}
	}
	var bad strings.Builder
	if code := run(context.Background(), []string{"--port", "-1"}, &bad, nil); code != 2 || !strings.Contains(bad.String(), "echo-backend: --port must be in") {
		t.Errorf("bad port exit %d, want 2 and the reason; output:\n%s", code, bad.String())
	}
}

// TestEchoBodyExpectContinue is a client that sends "Expect:
// 100-continue" (curl does for bodies over 1 MiB): the 100 Continue must
// come before the final response head, never inside its body.
func TestEchoBodyExpectContinue(t *testing.T) {
	base := start(t, "--echo-body")
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	want := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	head := "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(len(want)) + "\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go conn.Write(want) // as curl does after its 1 s wait, without waiting
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 100 {
		if resp, err = http.ReadResponse(br, nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("status %d, %d bytes back (err %v), want the %d bytes sent; starts %q", resp.StatusCode, len(got), err, len(want), got[:min(len(got), 40)])
	}
}

// TestBadChunkedBody: a request body whose chunked framing is broken is
// answered with the status it maps to (400), not a 200 dump, and the
// connection closes after it.
func TestBadChunkedBody(t *testing.T) {
	base := start(t)
	for _, body := range []string{"zz\r\nabc\r\n0\r\n\r\n", "3\r\nabc\n0\r\n\r\n", "3\nabc\r\n0\r\n\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		dump, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 400 || !resp.Close || !bytes.Contains(dump, []byte("(error reading body: ")) {
			t.Errorf("%q: %d close=%v\n%s", body, resp.StatusCode, resp.Close, dump)
		}
	}
}
