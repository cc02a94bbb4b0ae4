package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

func TestUnderscoreAlias(t *testing.T) {
	for name, want := range map[string]bool{
		"X_Forwarded_For": true, "x-forwarded_for": true, "Transfer_Encoding": true, "CONTENT_LENGTH": true,
		"X_Real_IP": true, "Proxy_Authorization": true,
		"X-Forwarded-For": false, "X_Custom": false, "Content-Length": false, "X_Forwarded_Fo": false, "": false,
	} {
		if got := underscoreAlias([]byte(name)); got != want {
			t.Errorf("underscoreAlias(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestConnectionListedNotJoined: a field the proxy joins into its own
// list (X-Forwarded-For and the client certificate field when trusted,
// Via with Config.Via) is left out when the client's Connection field
// lists it: it is hop-by-hop (RFC 9110 §7.6.1), as it is without the
// join.
func TestConnectionListedNotJoined(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 2)
	hs, _ := rawHarness(t, Config{TrustForwarded: true, Via: "edge", ClientCertHeader: "X-Client-Cert"}, serval.Hooks{},
		recordHeads(heads, "HTTP/1.1 204 No Content\r\n\r\n"))
	tc := dialHarness(t, hs)
	fields := "X-Forwarded-For: 6.6.6.6\r\nVia: 1.1 fake\r\nX-Client-Cert: Hash=forged\r\n"
	tc.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: X-Forwarded-For, via\r\nConnection: x-client-cert\r\n" + fields + "\r\n")
	tc.mustRead("GET")
	req := <-heads
	if xff, via, cert := req.Header.Get("X-Forwarded-For"), req.Header.Values("Via"), req.Header.Values("X-Client-Cert"); xff != "127.0.0.1" ||
		len(via) != 1 || via[0] != "1.1 edge" || len(cert) != 0 {
		t.Errorf("Connection-listed fields joined: X-Forwarded-For %q Via %q X-Client-Cert %q", xff, via, cert)
	}
	// Not listed, they are kept (trusted).
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n" + fields + "\r\n")
	tc.mustRead("GET")
	req = <-heads
	if xff, via, cert := req.Header.Get("X-Forwarded-For"), req.Header.Get("Via"), req.Header.Get("X-Client-Cert"); xff != "6.6.6.6, 127.0.0.1" ||
		via != "1.1 fake, 1.1 edge" || cert != "Hash=forged" {
		t.Errorf("X-Forwarded-For %q Via %q X-Client-Cert %q", xff, via, cert)
	}
}

// TestEmptyTrustedForwardedFields: with TrustForwarded, an incoming
// X-Forwarded-Proto or X-Forwarded-Host that is empty (or only commas)
// says nothing and is replaced by ours, as an absent one is; an empty
// value upstream reads as a scheme or host of "" (Django's
// USE_X_FORWARDED_HOST takes it as the host).
func TestEmptyTrustedForwardedFields(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 1)
	hs, _ := rawHarness(t, Config{TrustForwarded: true}, serval.Hooks{}, recordHeads(heads, "HTTP/1.1 204 No Content\r\n\r\n"))
	tc := dialHarness(t, hs)
	for _, c := range []struct{ in, proto, host string }{
		{"X-Forwarded-Proto:\r\nX-Forwarded-Host: , \r\n", "http", "t"},
		{"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: \r\nX-Forwarded-Host: h.example\r\nX-Forwarded-Host:\r\n", "https", "h.example"},
	} {
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n" + c.in + "\r\n")
		tc.mustRead("GET")
		req := <-heads
		if proto, host := req.Header.Values("X-Forwarded-Proto"), req.Header.Values("X-Forwarded-Host"); len(proto) != 1 || proto[0] != c.proto ||
			len(host) != 1 || host[0] != c.host {
			t.Errorf("%q: X-Forwarded-Proto %q X-Forwarded-Host %q, want %q %q", c.in, proto, host, c.proto, c.host)
		}
	}
}

// TestCheckVia: Config.Via is a received-by pseudonym (RFC 9110 §7.6.3):
// a token with an optional ":port".
func TestCheckVia(t *testing.T) {
	for _, ok := range []string{"", "edge", "edge:8080", "serval-1.2_x", strings.Repeat("v", ViaBytesMax)} {
		if err := CheckVia(ok); err != nil {
			t.Errorf("CheckVia(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a b", "é", "edge:", "edge:8x", ":80", "a/b", "a,b", strings.Repeat("v", ViaBytesMax+1)} {
		if CheckVia(bad) == nil {
			t.Errorf("CheckVia(%q) accepted", bad)
		}
	}
}
