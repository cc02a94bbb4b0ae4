package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/server"
)

func TestNextChunkSequence(t *testing.T) {
	h := &Handler{Log: slog.New(slog.DiscardHandler)}
	req := &serval.Request{Method: []byte("POST"), MethodID: serval.MethodPost, Path: []byte("/v1/chat/completions")}
	x := new(serval.Exchange)
	a := h.OnRequest(x, req, make([]byte, 0, 512))
	if a.Kind != serval.ActionStream || a.ContentType != "text/event-stream" {
		t.Fatalf("action = %+v", a)
	}
	var got strings.Builder
	buf := make([]byte, 256)
	for i := 0; ; i++ {
		if i > len(tokens)+1 {
			t.Fatal("stream does not end")
		}
		n, done, err := h.NextChunk(x, buf)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
		if done {
			break
		}
	}
	want := ""
	for _, tok := range tokens {
		want += "data: " + tok + "\n\n"
	}
	want += "data: [DONE]\n\n"
	if got.String() != want {
		t.Errorf("stream = %q\nwant %q", got.String(), want)
	}
}

func TestRoutes(t *testing.T) {
	h := &Handler{Log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		method serval.Method
		path   string
		kind   serval.ActionKind
		status int
	}{
		{serval.MethodGet, "/health", serval.ActionRespond, 200},
		{serval.MethodGet, "/nope", serval.ActionRespond, 404},
		{serval.MethodGet, "/v1/chat/completions", serval.ActionReject, 405},
		{serval.MethodPost, "/v1/chat/completions", serval.ActionStream, 200},
	} {
		a := h.OnRequest(new(serval.Exchange), &serval.Request{MethodID: tc.method, Path: []byte(tc.path)}, nil)
		if a.Kind != tc.kind || a.Status != tc.status {
			t.Errorf("%v %s: kind %v status %d, want %v %d", tc.method, tc.path, a.Kind, a.Status, tc.kind, tc.status)
		}
	}
}

// TestServe runs the real server on a free port and reads the stream with
// net/http's client.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	rc := make(chan int, 1)
	go func() {
		defer wg.Done()
		rc <- run(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--delay", "1ms", "--max-conns", "32"}, io.Discard, ready)
	}()
	defer wg.Wait()
	defer cancel()
	var addr string
	select {
	case addr = <-ready:
	case code := <-rc:
		t.Fatalf("run exited with %d before serving", code)
	case <-ctx.Done():
		t.Fatal("server did not start")
	}
	base := "http://" + strings.Replace(addr, "[::]", "127.0.0.1", 1)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	resp, err := c.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "OK" {
		t.Fatalf("/health: %d %q", resp.StatusCode, b)
	}

	resp, err = c.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(`{"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if te := resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Errorf("transfer-encoding = %v, want chunked", te)
	}
	sc := bufio.NewScanner(resp.Body)
	var events []string
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			events = append(events, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) != len(tokens)+1 || events[0] != "data: Hello" || events[len(events)-1] != "data: [DONE]" {
		t.Errorf("events = %q", events)
	}

	resp, err = c.Get(base + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/other: %d, want 404", resp.StatusCode)
	}
	cancel()
	if code := <-rc; code != 0 {
		t.Errorf("run returned %d after cancel, want 0", code)
	}
}

// TestStreamThroughBalancer: the SSE stream reaches a client through a
// Serval load balancer (lb.Handler in front of this server) token by
// token, as the server produces it, not all at once when it ends.
func TestStreamThroughBalancer(t *testing.T) {
	const delay = 30 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan string, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		run(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--delay", delay.String(), "--max-conns", "8"}, io.Discard, ready)
	})
	var origin string
	select {
	case origin = <-ready:
	case <-ctx.Done():
		t.Fatal("llm server did not start")
	}
	table, err := lb.ParseBackends(strings.Replace(origin, "[::]", "127.0.0.1", 1))
	if err != nil {
		t.Fatal(err)
	}
	h, err := lb.New(lb.Config{Upstreams: table, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Addr = ln.Addr().String()
	cfg.ConnectionsMax = 8
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := server.New(h, nil, nil, nil, cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	wg.Go(func() { srv.Serve(ctx, ln) })

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	var at []time.Time
	var events []string
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			events = append(events, line)
			at = append(at, time.Now())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) != len(tokens)+1 || events[0] != "data: Hello" || events[len(events)-1] != "data: [DONE]" {
		t.Fatalf("events = %q", events)
	}
	// The server sleeps delay between tokens: the client must see the
	// stream spread over about (tokens-1) delays, not in one burst.
	if spread, want := at[len(at)-1].Sub(at[0]), time.Duration(len(tokens)-1)*delay/2; spread < want {
		t.Fatalf("events arrived within %v, want them spread over at least %v: the balancer held the stream back", spread, want)
	}
}
