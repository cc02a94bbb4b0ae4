package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/server"
)

// hello answers every request itself: SelectUpstream is never reached,
// since OnRequest answers directly.
type hello struct{ name string }

func (h *hello) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

func (h *hello) OnRequest(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	if string(req.Path) == "/health" { // string(b) in a comparison does not allocate
		return serval.Respond(200, "text/plain", []byte("OK\n"))
	}
	// Build the body in buf, the scratch space the server lends: the
	// Action's Body must stay valid until the response is written.
	body := fmt.Appendf(buf[:0], "hello from %s: %s %s\n", h.name, req.Method, req.Path)
	return serval.Respond(200, "text/plain", body)
}

// Compile-time checks that the hooks are the ones the server looks for: a
// method with a near-miss signature is silently not called.
var _ serval.RequestHook = (*hello)(nil)

// run serves h on a free port of 127.0.0.1 until the returned stop is
// called; stop waits for Serve to return.
func run[H serval.Handler](h H, p serval.Pool) (addr string, stop func()) {
	cfg := server.DefaultConfig()
	cfg.ConnectionsMax = 16                     // each slot's buffers are allocated by New
	cfg.Logger = slog.New(slog.DiscardHandler)  // keep the example's output clean
	srv, err := server.New(h, p, nil, nil, cfg) // nil metrics and tracer: no-ops
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return ln.Addr().String(), func() {
		cancel() // graceful: in-flight requests finish, idle connections close
		if err := <-done; err != nil {
			panic(err)
		}
	}
}

// get fetches url and returns the status and body.
func get(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strconv.Itoa(resp.StatusCode) + " " + string(b)
}

// A backend that answers every request itself: a Handler with an
// OnRequest hook, served with New and Serve.
func ExampleNew() {
	addr, stop := run(&hello{name: "serval"}, nil)
	defer stop()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()

	fmt.Print(get(c, "http://"+addr+"/health"))
	fmt.Print(get(c, "http://"+addr+"/greet"))
	// Output:
	// 200 OK
	// 200 hello from serval: GET /greet
}

// A load-balancing reverse proxy: lb.New builds the handler (round robin
// over the healthy upstreams, passive health, retry of failed connects),
// pool.New keeps idle upstream connections, and New forwards every
// request the handler continues. Run a prober over h.Health() beside it:
// passive checks alone never bring an upstream back.
func ExampleNew_loadBalancer() {
	// Two origins, themselves Serval servers.
	a, stopA := run(&hello{name: "origin-a"}, nil)
	defer stopA()
	b, stopB := run(&hello{name: "origin-b"}, nil)
	defer stopB()

	table, err := serval.ParseUpstreams(a + "," + b) // indexes 0 and 1
	if err != nil {
		panic(err)
	}
	h, err := lb.New(lb.Config{Upstreams: table})
	if err != nil {
		panic(err)
	}
	p, err := pool.New(pool.DefaultConfig(len(table)))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	addr, stop := run(h, p)
	defer stop() // deferred last, so it runs first: the proxy stops before its origins

	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, path := range []string{"/x", "/y", "/z"} {
		fmt.Print(get(c, "http://"+addr+path))
	}
	// Output:
	// 200 hello from origin-a: GET /x
	// 200 hello from origin-b: GET /y
	// 200 hello from origin-a: GET /z
}

// events streams Server-Sent Events: OnRequest answers with the Stream
// action, and the server pulls the body from NextChunk, chunk by chunk,
// framing and flushing each one.
type events struct{}

// progress is one stream's state, kept in Exchange.User (cleared by the
// server for every request).
type progress struct{ sent, total int }

func (events) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

func (events) OnRequest(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	if string(req.Path) != "/events" {
		return serval.Reject(404, "not found\n")
	}
	x.User = &progress{total: 3}
	a := serval.Stream(200, "text/event-stream")
	a.Headers = []serval.Header{{Name: []byte("Cache-Control"), Value: []byte("no-cache")}}
	return a
}

// NextChunk writes the next event into buf and returns its length; done
// ends the stream. A handler that waits (for a token, a message) waits
// here: the server flushes each chunk as it comes.
func (events) NextChunk(x *serval.Exchange, buf []byte) (n int, done bool, err error) {
	p := x.User.(*progress)
	if p.sent == p.total {
		return copy(buf, "data: [DONE]\n\n"), true, nil
	}
	p.sent++
	return len(fmt.Appendf(buf[:0], "data: event %d\n\n", p.sent)), false, nil
}

var (
	_ serval.RequestHook   = events{}
	_ serval.ChunkStreamer = events{}
)

// A streamed response (Server-Sent Events) with the Stream action and
// NextChunk.
func ExampleNew_stream() {
	addr, stop := run(events{}, nil)
	defer stop()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()

	resp, err := c.Get("http://" + addr + "/events")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"), resp.TransferEncoding)
	fmt.Print(string(body))
	// Output:
	// 200 text/event-stream [chunked]
	// data: event 1
	//
	// data: event 2
	//
	// data: event 3
	//
	// data: [DONE]
}
