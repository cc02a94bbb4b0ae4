package server

import (
	"bufio"
	"runtime"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// A hook that ends its goroutine (runtime.Goexit, as t.FailNow in a
// test's handler does) ends its own connection only, as when every
// connection had a goroutine of its own: the slot it freed serves the
// next connection, and Serve returns.
func TestSlotGoroutineGoexit(t *testing.T) {
	h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		if string(req.Path) == "/exit" {
			runtime.Goexit()
		}
		return serval.Respond(200, "text/plain", []byte("ok"))
	}}
	cfg := testConfig()
	srv, ts := serve(t, h, nil, nil, cfg)
	c := dial(t, ts.addr)
	send(t, c, get("/exit"))
	expectClosed(t, bufio.NewReader(c))
	c.Close()
	waitSlotFree(t, srv)

	// The free list hands the same slot out first.
	c2 := dial(t, ts.addr)
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c2.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var b [256]byte
	n, err := c2.Read(b[:])
	if n == 0 {
		// Serve would not return either (the connection holds its slot):
		// stop the server the hard way so the test ends.
		t.Fatalf("the connection after a hook's Goexit was never served: %v", err)
	}
}
