package proxy

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

// TestMaxForwards: a TRACE or OPTIONS with Max-Forwards 0 is answered by
// the proxy as final recipient (RFC 9110 §7.6.2), TRACE echoing the
// request without its credentials (§9.3.8); a larger value is forwarded
// decremented; other methods' Max-Forwards pass untouched, as does a
// repeated one or one that is not a single decimal number.
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

	for _, c := range []struct {
		method string
		in     []string
		want   []string
	}{
		{"OPTIONS", []string{"5"}, []string{"4"}},
		{"TRACE", []string{"1"}, []string{"0"}},
		{"OPTIONS", []string{"99999999999999999999"}, []string{"2147483647"}}, // our maximum
		{"OPTIONS", []string{"x"}, []string{"x"}},                             // not a number: an upstream may judge it
		{"OPTIONS", []string{"-1"}, []string{"-1"}},
		{"OPTIONS", []string{"0, 5"}, []string{"0, 5"}},
		// Repeated: which budget counts is the upstream's to judge (not
		// each decremented, not answered here on a 0).
		{"OPTIONS", []string{"1", "5"}, []string{"1", "5"}},
		{"TRACE", []string{"5", "0"}, []string{"5", "0"}},
		{"GET", []string{"0"}, []string{"0"}}, // only TRACE and OPTIONS
	} {
		head := c.method + " / HTTP/1.1\r\nHost: t\r\n"
		for _, v := range c.in {
			head += "Max-Forwards: " + v + "\r\n"
		}
		tc.send(head + "\r\n")
		if resp, body := tc.mustRead(c.method); resp.StatusCode != 200 || string(body) != "up" {
			t.Fatalf("%s Max-Forwards %q: status %d body %q", c.method, c.in, resp.StatusCode, body)
		}
		if got := (<-heads).Header.Values("Max-Forwards"); !slices.Equal(got, c.want) {
			t.Fatalf("%s Max-Forwards %q reached the upstream as %q, want %q", c.method, c.in, got, c.want)
		}
	}
	// A TRACE ending here with a body it should not have: the connection
	// closes rather than read the body as the next request.
	tc.send("TRACE / HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\nContent-Length: 30\r\n\r\n" + strings.Repeat("G", 10))
	if resp, _ := tc.mustRead("TRACE"); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("TRACE with an unread body: status %d close %v", resp.StatusCode, resp.Close)
	}
}
