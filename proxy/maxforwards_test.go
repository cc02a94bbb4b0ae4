package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

// TestMaxForwards: a TRACE or OPTIONS with Max-Forwards 0 is answered by
// the proxy as final recipient (RFC 9110 §7.6.2), TRACE echoing the
// request without its credentials (§9.3.8); a larger value is forwarded
// decremented; other methods' Max-Forwards pass untouched.
func TestMaxForwards(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 4)
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, recordHeads(heads, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nup"))
	tc := dialHarness(t, hs)

	tc.send("OPTIONS /a HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n")
	if resp, body := tc.mustRead("OPTIONS"); resp.StatusCode != 200 || len(body) != 0 || resp.Close {
		t.Fatalf("OPTIONS Max-Forwards 0: status %d body %q close %v", resp.StatusCode, body, resp.Close)
	}
	req := "TRACE /t?q=1 HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\nCookie: s=secret\r\nAuthorization: Basic c2VjcmV0\r\nX-A: b\r\n\r\n"
	tc.send(req)
	resp, body := tc.mustRead("TRACE")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "message/http" {
		t.Fatalf("TRACE Max-Forwards 0: status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	want := "TRACE /t?q=1 HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\nX-A: b\r\n\r\n"
	if string(body) != want {
		t.Fatalf("TRACE echo %q, want %q", body, want)
	}
	if n := o.conns.Load(); n != 0 {
		t.Fatalf("the upstream got %d connections for requests that end here", n)
	}

	for _, c := range []struct{ method, in, want string }{
		{"OPTIONS", "5", "4"},
		{"TRACE", "1", "0"},
		{"OPTIONS", "99999999999999999999", "2147483647"}, // our maximum
		{"OPTIONS", "x", "x"},                             // not a number: an upstream may judge it
		{"GET", "0", "0"},                                 // only TRACE and OPTIONS
	} {
		tc.send(c.method + " / HTTP/1.1\r\nHost: t\r\nMax-Forwards: " + c.in + "\r\n\r\n")
		if resp, body := tc.mustRead(c.method); resp.StatusCode != 200 || string(body) != "up" {
			t.Fatalf("%s Max-Forwards %s: status %d body %q", c.method, c.in, resp.StatusCode, body)
		}
		if got := (<-heads).Header.Values("Max-Forwards"); len(got) != 1 || got[0] != c.want {
			t.Fatalf("%s Max-Forwards %s reached the upstream as %q, want %q", c.method, c.in, got, c.want)
		}
	}
	// A TRACE ending here with a body it should not have: the connection
	// closes rather than read the body as the next request.
	tc.send("TRACE / HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\nContent-Length: 30\r\n\r\n" + strings.Repeat("G", 10))
	if resp, _ := tc.mustRead("TRACE"); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("TRACE with an unread body: status %d close %v", resp.StatusCode, resp.Close)
	}
}
