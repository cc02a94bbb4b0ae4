package http1

import (
	"errors"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

// crlf turns "\n" into "\r\n" so table heads stay readable; cases that
// test bare LF or CR spell their bytes out instead.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func newReq(fieldsMax int) *serval.Request {
	var r serval.Request
	r.Init(fieldsMax)
	return &r
}

type reqCase struct {
	name string
	head string // raw bytes
	// status is 0 for an accepted head, else the rejection status.
	status int
	check  func(t *testing.T, r *serval.Request)
}

const h11 = "Host: example.com\r\n"

var requestCases = []reqCase{
	{name: "get", head: crlf("GET /index.html?q=1 HTTP/1.1\nHost: example.com\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Method) == "GET" && r.MethodID == serval.MethodGet, "method")
		expect(t, string(r.Path) == "/index.html" && string(r.Query) == "q=1", "path/query")
		expect(t, string(r.Host) == "example.com" && r.Version == serval.Version11, "host/version")
		expect(t, r.ContentLength == -1 && !r.Chunked && !r.Close && r.Form == serval.FormOrigin, "framing")
	}},
	{name: "leading empty lines", head: "\r\n\r\nGET / HTTP/1.1\r\n" + h11 + "\r\n"},
	{name: "too many leading empty lines", head: "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "leading bare LF", head: "\nGET / HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "other method token", head: "M-SEARCH * HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "unknown method", head: "PROPFIND /a HTTP/1.1\r\n" + h11 + "\r\n", check: func(t *testing.T, r *serval.Request) {
		expect(t, r.MethodID == serval.MethodOther && string(r.Method) == "PROPFIND", "method")
	}},
	{name: "method with non-token", head: "GE(T / HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "empty method", head: " / HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "double space", head: "GET  / HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "tab separator", head: "GET\t/ HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "no version", head: "GET /\r\n" + h11 + "\r\n", status: 400},
	{name: "http/1.0 no host", head: crlf("GET / HTTP/1.0\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Version == serval.Version10 && r.Close, "1.0 closes")
	}},
	{name: "http/1.0 keep-alive", head: crlf("GET / HTTP/1.0\nConnection: Keep-Alive\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, !r.Close, "keep-alive")
	}},
	{name: "connection close", head: crlf("GET / HTTP/1.1\nHost: a\nConnection: foo, close\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Close, "close")
	}},
	{name: "version 2.0", head: "GET / HTTP/2.0\r\n" + h11 + "\r\n", status: 505},
	{name: "version 1.2", head: "GET / HTTP/1.2\r\n" + h11 + "\r\n", status: 505},
	{name: "version rtsp", head: "GET / RTSP/1.0\r\n" + h11 + "\r\n", status: 505},
	{name: "version garbage", head: "GET / HTTP/x\r\n" + h11 + "\r\n", status: 400},
	{name: "version lowercase", head: "GET / http/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "version too long", head: "GET / HTTP/1.10\r\n" + h11 + "\r\n", status: 400},
	{name: "version no minor", head: "GET / HTTP/2\r\n" + h11 + "\r\n", status: 400},
	{name: "space after version", head: "GET / HTTP/1.1 \r\n" + h11 + "\r\n", status: 400},
	{name: "request line bare LF", head: "GET / HTTP/1.1\n" + h11 + "\r\n", status: 400},
	{name: "request line bare CR", head: "GET / HTTP/1.1\rHost: a\r\n\r\n", status: 400},
	{name: "target CTL", head: "GET /a\x01b HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target DEL", head: "GET /a\x7fb HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target high byte", head: "GET /\xc3\xa9 HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target tab", head: "GET /a\tb HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target fragment", head: "GET /a#b HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target fragment in query", head: "GET /a?x=1#b HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "absolute target fragment", head: "GET http://example.com/a#b HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target encoded hash", head: "GET /a%23b HTTP/1.1\r\n" + h11 + "\r\n"},
	{name: "target not origin", head: "GET index.html HTTP/1.1\r\n" + h11 + "\r\n", status: 400},
	{name: "target too long", head: "GET /" + strings.Repeat("a", serval.TargetBytesMaxDefault) + " HTTP/1.1\r\n" + h11 + "\r\n", status: 414},
	{name: "target at limit", head: "GET /" + strings.Repeat("a", serval.TargetBytesMaxDefault-1) + " HTTP/1.1\r\n" + h11 + "\r\n"},
	{name: "absolute form", head: crlf("GET HTTP://Example.com:8080?x=1 HTTP/1.1\nHost: other\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Form == serval.FormAbsolute && string(r.Host) == "Example.com:8080", "host from target")
		expect(t, string(r.Path) == "/" && string(r.Query) == "x=1", "path")
	}},
	{name: "absolute https path", head: crlf("GET https://a.b/c/d HTTP/1.1\nHost: a.b\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Host) == "a.b" && string(r.Path) == "/c/d" && r.Query == nil, "split")
	}},
	{name: "absolute form still needs host", head: crlf("GET http://a/ HTTP/1.1\n\n"), status: 400},
	{name: "absolute userinfo", head: crlf("GET http://u@a/ HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "absolute empty authority", head: crlf("GET http:///x HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "absolute empty host with port", head: crlf("GET http://:80/x HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "absolute empty host empty port", head: crlf("GET http://:/x HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "options absolute empty host", head: crlf("OPTIONS http://:8080 HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "absolute ftp", head: crlf("GET ftp://a/ HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "asterisk", head: crlf("OPTIONS * HTTP/1.1\nHost: a\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Form == serval.FormAsterisk && string(r.Path) == "*", "asterisk")
	}},
	{name: "absolute options without path", head: crlf("OPTIONS http://a.example:8001 HTTP/1.1\nHost: a.example:8001\n\n"), check: func(t *testing.T, r *serval.Request) {
		// RFC 9112 §3.2.4: the last proxy sends "OPTIONS *".
		expect(t, r.Form == serval.FormAbsolute && string(r.Host) == "a.example:8001" && string(r.Path) == "*" && r.Query == nil, "asterisk path")
	}},
	{name: "absolute options with slash", head: crlf("OPTIONS http://a.example/ HTTP/1.1\nHost: a.example\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Path) == "/", "slash kept")
	}},
	{name: "absolute options query", head: crlf("OPTIONS http://a.example?x HTTP/1.1\nHost: a.example\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Path) == "/" && string(r.Query) == "x", "a query needs a path")
	}},
	{name: "asterisk not options", head: crlf("GET * HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "connect", head: crlf("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Form == serval.FormAuthority && r.MethodID == serval.MethodConnect && len(r.Path) == 0, "authority")
	}},
	{name: "connect ipv6", head: crlf("CONNECT [::1]:443 HTTP/1.1\nHost: [::1]:443\n\n")},
	{name: "connect no port", head: crlf("CONNECT example.com HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "connect origin form", head: crlf("CONNECT / HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "authority form not connect", head: crlf("GET example.com:80 HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "missing host", head: crlf("GET / HTTP/1.1\n\n"), status: 400},
	{name: "repeated host", head: crlf("GET / HTTP/1.1\nHost: a\nHost: a\n\n"), status: 400},
	{name: "empty host", head: crlf("GET / HTTP/1.1\nHost:\n\n")},
	{name: "host with port", head: crlf("GET / HTTP/1.1\nHost: a.example:8080\n\n")},
	{name: "host port without host", head: crlf("GET / HTTP/1.1\nHost: :8080\n\n"), status: 400},
	{name: "host colon only", head: crlf("GET / HTTP/1.1\nHost: :\n\n"), status: 400},
	{name: "host empty with port", head: crlf("GET / HTTP/1.1\nHost: a.example:\n\n")},
	{name: "host ipv6", head: crlf("GET / HTTP/1.1\nHost: [2001:db8::1]:80\n\n")},
	{name: "host bad char", head: crlf("GET / HTTP/1.1\nHost: a/b\n\n"), status: 400},
	{name: "host userinfo", head: crlf("GET / HTTP/1.1\nHost: u@a\n\n"), status: 400},
	{name: "host bad port", head: crlf("GET / HTTP/1.1\nHost: a:99999\n\n"), status: 400},
	{name: "host port letters", head: crlf("GET / HTTP/1.1\nHost: a:8o\n\n"), status: 400},
	{name: "host two colons", head: crlf("GET / HTTP/1.1\nHost: a:1:2\n\n"), status: 400},
	{name: "host space inside", head: crlf("GET / HTTP/1.1\nHost: a b\n\n"), status: 400},
	{name: "host pct", head: crlf("GET / HTTP/1.1\nHost: a%41b\n\n")},
	{name: "host bad pct", head: crlf("GET / HTTP/1.1\nHost: a%4\n\n"), status: 400},
	{name: "field value trimmed", head: crlf("GET / HTTP/1.1\nHost: a\nX-A: \t v a l \t\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Get("x-a")) == "v a l", "trimmed")
	}},
	{name: "field obs-text", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n"},
	{name: "field empty value", head: crlf("GET / HTTP/1.1\nHost: a\nX-A:\n\n")},
	{name: "space before colon", head: crlf("GET / HTTP/1.1\nHost : a\n\n"), status: 400},
	{name: "TE space before colon", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding : chunked\n\n"), status: 400},
	{name: "empty field name", head: crlf("GET / HTTP/1.1\nHost: a\n: v\n\n"), status: 400},
	{name: "field name no colon", head: crlf("GET / HTTP/1.1\nHost: a\nX-A\n\n"), status: 400},
	{name: "field name non-token", head: crlf("GET / HTTP/1.1\nHost: a\nX(A): v\n\n"), status: 400},
	{name: "field value NUL", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", status: 400},
	{name: "field value CTL", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x1bb\r\n\r\n", status: 400},
	{name: "field value DEL", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", status: 400},
	{name: "field value bare CR", head: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", status: 400},
	{name: "field bare LF", head: "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", status: 400},
	{name: "final bare LF", head: "GET / HTTP/1.1\r\nHost: a\r\n\n", status: 400},
	{name: "final bare CR", head: "GET / HTTP/1.1\r\nHost: a\r\n\rX", status: 400},
	{name: "obs-fold", head: crlf("GET / HTTP/1.1\nHost: a\nX-A: b\n c\n\n"), status: 400},
	{name: "TE obs-fold", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding:\n chunked\n\n"), status: 400},
	{name: "first line folded", head: crlf("GET / HTTP/1.1\n Host: a\n\n"), status: 400},
	{name: "content-length", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 42\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.ContentLength == 42 && RequestBody(r) == BodyLength, "cl")
	}},
	{name: "content-length zero", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 0\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.ContentLength == 0 && RequestBody(r) == BodyNone, "cl 0")
	}},
	{name: "content-length same list", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 5, 5\nContent-Length: 5\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.ContentLength == 5, "cl")
	}},
	{name: "content-length differing", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 6\n\n"), status: 400},
	{name: "content-length differing list", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 5, 6\n\n"), status: 400},
	{name: "content-length trailing comma", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 5,\n\n"), status: 400},
	{name: "content-length empty", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length:\n\n"), status: 400},
	{name: "content-length negative", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: -1\n\n"), status: 400},
	{name: "content-length plus", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: +1\n\n"), status: 400},
	{name: "content-length hex", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 0x10\n\n"), status: 400},
	{name: "content-length max", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 9223372036854775807\n\n")},
	{name: "content-length overflow", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 9223372036854775808\n\n"), status: 400},
	{name: "content-length inner space", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 1 2\n\n"), status: 400},
	{name: "chunked", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Chunked && r.ContentLength == -1 && RequestBody(r) == BodyChunked, "chunked")
	}},
	{name: "chunked case", head: crlf("POST / HTTP/1.1\nHost: a\ntransfer-encoding: CHUNKED\n\n")},
	{name: "CL and TE", head: crlf("POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"), status: 400},
	{name: "TE and CL", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 5\n\n"), status: 400},
	{name: "TE xchunked", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: xchunked\n\n"), status: 400},
	{name: "TE chunked identity", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, identity\n\n"), status: 400},
	{name: "TE chunked twice", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked\n\n"), status: 400},
	{name: "TE chunked twice fields", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n"), status: 400},
	{name: "TE gzip chunked", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n"), status: 501},
	{name: "TE gzip field then chunked", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\nTransfer-Encoding: chunked\n\n"), status: 501},
	{name: "TE gzip only", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\n\n"), status: 400},
	{name: "TE empty", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding:\n\n"), status: 400},
	{name: "TE with params", head: crlf("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked;q=1\n\n"), status: 400},
	{name: "TE in HTTP/1.0", head: crlf("POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n"), status: 400},
	{name: "expect continue", head: crlf("POST / HTTP/1.1\nHost: a\nExpect: 100-Continue\nContent-Length: 1\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.ExpectContinue, "expect")
	}},
	{name: "expect other", head: crlf("POST / HTTP/1.1\nHost: a\nExpect: 200-ok\n\n"), status: 417},
	{name: "expect ignored in 1.0", head: crlf("POST / HTTP/1.0\nExpect: 200-ok\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, !r.ExpectContinue, "ignored")
	}},
	{name: "upgrade", head: crlf("GET /ws HTTP/1.1\nHost: a\nConnection: Upgrade\nUpgrade: websocket\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Upgrade, "upgrade")
	}},
	{name: "upgrade field only", head: crlf("GET /ws HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, !r.Upgrade, "no upgrade without connection token")
	}},
	{name: "stray percent in path", head: crlf("GET /% HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "percent with one hex digit", head: crlf("GET /a%2 HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "percent with one hex digit before query", head: crlf("GET /a%2?x HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "percent without hex digits", head: crlf("GET /%zz/b HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "stray percent in absolute path", head: crlf("GET http://a/b% HTTP/1.1\nHost: a\n\n"), status: 400},
	{name: "pct-encoded path", head: crlf("GET /%41%2f%2F/%e2%82%ac HTTP/1.1\nHost: a\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Path) == "/%41%2f%2F/%e2%82%ac", "path as received")
	}},
	{name: "stray percent in query", head: crlf("GET /p?q=100%&r=%zz HTTP/1.1\nHost: a\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, string(r.Query) == "q=100%&r=%zz", "query as received")
	}},
	{name: "upgrade naming no protocol", head: crlf("GET /ws HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade:\nUpgrade: ,\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, !r.Upgrade, "no upgrade when the Upgrade fields name nothing")
	}},
	{name: "upgrade list with empty member", head: crlf("GET /ws HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade: , websocket\n\n"), check: func(t *testing.T, r *serval.Request) {
		expect(t, r.Upgrade, "upgrade")
	}},
}

func expect(t *testing.T, ok bool, what string) {
	t.Helper()
	if !ok {
		t.Errorf("check failed: %s", what)
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(serval.FieldsMaxDefault)
			lim := DefaultLimits()
			n, err := ParseRequest([]byte(tc.head), req, &lim)
			if tc.status != 0 {
				var se *serval.StatusError
				if !errors.As(err, &se) || se.Status != tc.status {
					t.Fatalf("got n=%d err=%v, want status %d", n, err, tc.status)
				}
				if n != 0 {
					t.Fatalf("n=%d on error", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if n != len(tc.head) || req.HeadBytes != n {
				t.Fatalf("n=%d HeadBytes=%d, want %d", n, req.HeadBytes, len(tc.head))
			}
			if tc.check != nil {
				tc.check(t, req)
			}
		})
	}
}

// TestRequestPrefixes checks that every proper prefix of every valid head
// is ErrIncomplete, and that bytes after the head are not consumed.
func TestRequestPrefixes(t *testing.T) {
	for _, tc := range requestCases {
		if tc.status != 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(serval.FieldsMaxDefault)
			b := []byte(tc.head)
			for i := 0; i < len(b); i++ {
				if n, err := ParseRequest(b[:i], req, nil); err != ErrIncomplete {
					t.Fatalf("prefix %d of %d: n=%d err=%v", i, len(b), n, err)
				}
			}
			more := append(append([]byte(nil), b...), "GET / HTTP/1.1\r\n"...)
			if n, err := ParseRequest(more, req, nil); err != nil || n != len(b) {
				t.Fatalf("with trailing bytes: n=%d err=%v", n, err)
			}
		})
	}
}

func TestRequestLimits(t *testing.T) {
	head := crlf("GET / HTTP/1.1\nHost: a\nA: 1\nB: 2\n\n")
	t.Run("fields at cap", func(t *testing.T) {
		if _, err := ParseRequest([]byte(head), newReq(3), nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fields over cap", func(t *testing.T) {
		if _, err := ParseRequest([]byte(head), newReq(2), nil); err != ErrTooManyFields {
			t.Fatal(err)
		}
	})
	t.Run("fields over cap early", func(t *testing.T) {
		if _, err := ParseRequest([]byte(head[:len(head)-7]), newReq(2), nil); err != ErrTooManyFields {
			t.Fatal(err)
		}
	})
	t.Run("head at limit", func(t *testing.T) {
		lim := Limits{HeadBytesMax: len(head), TargetBytesMax: 10}
		if _, err := ParseRequest([]byte(head), newReq(10), &lim); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("head over limit", func(t *testing.T) {
		lim := Limits{HeadBytesMax: len(head) - 1, TargetBytesMax: 10}
		if _, err := ParseRequest([]byte(head), newReq(10), &lim); err != ErrHeadTooLarge {
			t.Fatal(err)
		}
		if _, err := ParseRequest([]byte(head[:len(head)-2]), newReq(10), &lim); err != ErrIncomplete {
			t.Fatal(err)
		}
	})
	t.Run("endless field", func(t *testing.T) {
		b := []byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", serval.HeadBytesMaxDefault))
		if _, err := ParseRequest(b, newReq(10), nil); err != ErrHeadTooLarge {
			t.Fatal(err)
		}
	})
	t.Run("target too long early", func(t *testing.T) {
		lim := Limits{HeadBytesMax: 100, TargetBytesMax: 4}
		if _, err := ParseRequest([]byte("GET /abcd"), newReq(10), &lim); err != ErrTargetTooLong {
			t.Fatal(err)
		}
		if _, err := ParseRequest([]byte("GET /abc"), newReq(10), &lim); err != ErrIncomplete {
			t.Fatal(err)
		}
	})
	// Verdicts that need no more bytes come before the head is complete.
	early := []struct {
		name, head string
		want       error
	}{
		{"content-length overflow", "PUT /u HTTP/1.1\r\nContent-Length: 1000000000000000000000\r\n", ErrBadLength},
		{"duplicate content-length", "PUT /u HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", ErrBadLength},
		{"CL then TE", "PUT /u HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n", ErrLengthAndTE},
		{"chunked then more", "PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", ErrBadTE},
		{"repeated host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", ErrRepeatedHost},
		{"version without CR", "GET / HTTP/5.6", ErrVersion},
		{"garbage version without CR", "GET / HTTP/x.y", ErrBadVersion},
	}
	for _, tc := range early {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseRequest([]byte(tc.head), newReq(10), nil); err != tc.want {
				t.Fatalf("got %v want %v", err, tc.want)
			}
		})
	}
	// An unsupported expectation is a 417 only for a head otherwise well
	// formed: a malformed head after it (here obs-fold, the way a folded
	// Expect reads) is the 400 any malformed head gets.
	expect := []struct {
		name, head string
		want       error
	}{
		{"bad expect", "GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n", ErrExpectation},
		{"empty expect: no expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", nil},
		{"empty list expect: no expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: , \r\n\r\n", nil},
		{"bad member after an empty one", "GET / HTTP/1.1\r\nHost: a\r\nExpect: ,x\r\n\r\n", ErrExpectation},
		{"folded expect", "GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n 100-continue\r\n\r\n", ErrObsFold},
		{"bad expect, then a bad field", "GET / HTTP/1.1\r\nExpect: x\r\nBad Name: v\r\n\r\n", ErrBadFieldName},
		{"bad expect, no host", "GET / HTTP/1.1\r\nExpect: x\r\n\r\n", ErrMissingHost},
		{"bad expect, incomplete", "GET / HTTP/1.1\r\nExpect: x\r\n", ErrIncomplete},
		{"bad expect, HTTP/1.0 ignores it", "GET / HTTP/1.0\r\nExpect: x\r\n\r\n", nil},
	}
	for _, tc := range expect {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseRequest([]byte(tc.head), newReq(10), nil); err != tc.want {
				t.Fatalf("got %v want %v", err, tc.want)
			}
		})
	}
	t.Run("empty expect waits for nothing", func(t *testing.T) {
		req := newReq(10)
		if _, err := ParseRequest([]byte("POST / HTTP/1.1\r\nHost: a\r\nExpect:\r\nContent-Length: 1\r\n\r\n"), req, nil); err != nil || req.ExpectContinue {
			t.Fatalf("err %v, ExpectContinue %v: want nil, false", err, req.ExpectContinue)
		}
	})
	t.Run("early bad byte", func(t *testing.T) {
		if _, err := ParseRequest([]byte("GET / HTTP/1.1\r\nX\x00"), newReq(10), nil); err != ErrBadFieldName {
			t.Fatal(err)
		}
	})
}

func TestTokenIter(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"close", []string{"close"}},
		{" a ,\tb,, c\t", []string{"a", "b", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			it := NewTokenIter([]byte(tc.in))
			var got []string
			for tok, ok := it.Next(); ok; tok, ok = it.Next() {
				got = append(got, string(tok))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q want %q", got, tc.want)
			}
		})
	}
	expect(t, HasToken([]byte("keep-alive, Upgrade"), "upgrade"), "has upgrade")
	expect(t, !HasToken([]byte("keep-alive, Upgrades"), "upgrade"), "no upgrade")
}

func TestRequestLineOf(t *testing.T) {
	for _, c := range []struct{ in, method, path, query string }{
		{"GET /a?b=1 HTTP/1.1\r\nHost: h\"x\r\n\r\n", "GET", "/a", "b=1"},
		{"\r\nPOST /x HTTP/1.1\r\n", "POST", "/x", ""},
		{"GET /\x01 HTTP/1.1\r\n", "GET", "", ""},
		{"G(T / HTTP/1.1\r\n", "", "", ""},
		{"GET", "", "", ""},
		{"GET /" + strings.Repeat("a", 2*logTargetMax) + " HTTP/1.1\r\n", "GET", "/" + strings.Repeat("a", logTargetMax-1), ""},
		{"", "", "", ""},
	} {
		m, p, q := RequestLineOf([]byte(c.in))
		if string(m) != c.method || string(p) != c.path || string(q) != c.query {
			t.Errorf("RequestLineOf(%q) = %q %q %q, want %q %q %q", c.in, m, p, q, c.method, c.path, c.query)
		}
	}
	buf := []byte("GET /a?b HTTP/1.1\r\nHost: \x01\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { RequestLineOf(buf) }); n != 0 {
		t.Errorf("RequestLineOf allocates %v times", n)
	}
}
