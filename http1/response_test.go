package http1

import (
	"errors"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

func newResp(fieldsMax int) *serval.Response {
	var r serval.Response
	r.Init(fieldsMax)
	return &r
}

var responseCases = []struct {
	name   string
	head   string
	bad    bool
	check  func(t *testing.T, r *serval.Response)
	method serval.Method
	body   BodyKind
}{
	{name: "ok length", head: crlf("HTTP/1.1 200 OK\nContent-Length: 5\n\n"), body: BodyLength, check: func(t *testing.T, r *serval.Response) {
		expect(t, r.Status == 200 && string(r.Reason) == "OK" && r.ContentLength == 5 && r.Version == serval.Version11, "fields")
	}},
	{name: "chunked", head: crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"), body: BodyChunked},
	{name: "close delimited", head: crlf("HTTP/1.1 200 OK\n\n"), body: BodyClose},
	{name: "zero length", head: crlf("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), body: BodyNone},
	{name: "head request", head: crlf("HTTP/1.1 200 OK\nContent-Length: 5\n\n"), method: serval.MethodHead, body: BodyNone},
	{name: "connect tunnel", head: crlf("HTTP/1.1 200 OK\n\n"), method: serval.MethodConnect, body: BodyNone},
	{name: "continue", head: crlf("HTTP/1.1 100 Continue\n\n"), body: BodyNone},
	{name: "no content", head: crlf("HTTP/1.1 204 No Content\n\n"), body: BodyNone},
	{name: "not modified", head: crlf("HTTP/1.1 304 Not Modified\nContent-Length: 10\n\n"), body: BodyNone},
	{name: "no reason with SP", head: crlf("HTTP/1.1 200 \n\n"), body: BodyClose},
	{name: "no reason no SP", head: crlf("HTTP/1.1 200\n\n"), body: BodyClose},
	{name: "reason obs-text", head: "HTTP/1.1 200 \xc3\x9c ok\r\n\r\n", body: BodyClose},
	{name: "status 599", head: crlf("HTTP/1.1 599 X\n\n"), body: BodyClose},
	{name: "http/1.0 closes", head: crlf("HTTP/1.0 200 OK\n\n"), body: BodyClose, check: func(t *testing.T, r *serval.Response) {
		expect(t, r.Close && r.Version == serval.Version10, "close")
	}},
	{name: "http/1.0 keep-alive", head: crlf("HTTP/1.0 200 OK\nConnection: keep-alive\nContent-Length: 1\n\n"), body: BodyLength, check: func(t *testing.T, r *serval.Response) {
		expect(t, !r.Close, "keep-alive")
	}},
	{name: "connection close", head: crlf("HTTP/1.1 200 OK\nConnection: close\nContent-Length: 1\n\n"), body: BodyLength, check: func(t *testing.T, r *serval.Response) {
		expect(t, r.Close, "close")
	}},
	{name: "status 099", head: crlf("HTTP/1.1 099 X\n\n"), bad: true},
	{name: "status 600", head: crlf("HTTP/1.1 600 X\n\n"), bad: true}, // RFC 9110 §15: 100-599
	{name: "status 999", head: crlf("HTTP/1.1 999 X\n\n"), bad: true},
	{name: "status two digits", head: crlf("HTTP/1.1 20 X\n\n"), bad: true},
	{name: "status four digits", head: crlf("HTTP/1.1 2000 X\n\n"), bad: true},
	{name: "version 2", head: crlf("HTTP/2.0 200 OK\n\n"), bad: true},
	{name: "version 1.2 is 1.1", head: crlf("HTTP/1.2 200 OK\nContent-Length: 1\n\n"), body: BodyLength, check: func(t *testing.T, r *serval.Response) {
		expect(t, r.Version == serval.Version11 && !r.Close, "version 1.1, keep-alive (RFC 9110 §2.5)")
	}},
	{name: "version 1.10", head: crlf("HTTP/1.10 200 OK\n\n"), bad: true},
	{name: "version 1.x", head: crlf("HTTP/1.x 200 OK\n\n"), bad: true},
	{name: "version lowercase", head: crlf("http/1.1 200 OK\n\n"), bad: true},
	{name: "reason CTL", head: "HTTP/1.1 200 O\x01K\r\n\r\n", bad: true},
	{name: "status bare LF", head: "HTTP/1.1 200 OK\n\r\n", bad: true},
	{name: "CL and TE", head: crlf("HTTP/1.1 200 OK\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"), bad: true},
	{name: "differing CL", head: crlf("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Length: 6\n\n"), bad: true},
	{name: "bad CL", head: crlf("HTTP/1.1 200 OK\nContent-Length: 5x\n\n"), bad: true},
	{name: "TE not chunked", head: crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\n"), bad: true},
	{name: "TE gzip chunked", head: crlf("HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n"), bad: true},
	{name: "TE in 1.0", head: crlf("HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n"), bad: true},
	{name: "obs-fold", head: crlf("HTTP/1.1 200 OK\nX-A: 1\n 2\n\n"), bad: true},
	{name: "space before colon", head: crlf("HTTP/1.1 200 OK\nContent-Length : 5\n\n"), bad: true},
	{name: "leading CRLF", head: crlf("\nHTTP/1.1 200 OK\n\n"), body: BodyClose},
	{name: "too many leading CRLF", head: crlf("\n\n\n\n\nHTTP/1.1 200 OK\n\n"), bad: true},
	{name: "oversized", head: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", serval.HeadBytesMaxDefault) + "\r\n\r\n", bad: true},
}

func TestParseResponse(t *testing.T) {
	for _, tc := range responseCases {
		t.Run(tc.name, func(t *testing.T) {
			resp := newResp(serval.FieldsMaxDefault)
			n, err := ParseResponse([]byte(tc.head), resp, nil)
			if tc.bad {
				var se *serval.StatusError
				if !errors.As(err, &se) || se.Status != 502 {
					t.Fatalf("got n=%d err=%v, want 502", n, err)
				}
				return
			}
			if err != nil || n != len(tc.head) || resp.HeadBytes != n {
				t.Fatalf("n=%d err=%v", n, err)
			}
			if got := ResponseBody(resp, tc.method); got != tc.body {
				t.Fatalf("body %d want %d", got, tc.body)
			}
			if tc.check != nil {
				tc.check(t, resp)
			}
			for i := 0; i < len(tc.head); i++ {
				if _, err := ParseResponse([]byte(tc.head[:i]), resp, nil); err != ErrIncomplete {
					t.Fatalf("prefix %d: %v", i, err)
				}
			}
		})
	}
}

func TestWriters(t *testing.T) {
	fields := []serval.Header{{Name: []byte("Host"), Value: []byte("a")}, {Name: []byte("X"), Value: nil}}
	cases := []struct{ name, got, want string }{
		{"request", string(AppendRequestHead(nil, []byte("GET"), []byte("/p?q"), fields)), "GET /p?q HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"},
		{"response", string(AppendResponseHead(nil, 404, nil, fields[:1])), "HTTP/1.1 404 Not Found\r\nHost: a\r\n\r\n"},
		{"status reason", string(AppendStatusLine(nil, 200, []byte("Fine"))), "HTTP/1.1 200 Fine\r\n"},
		{"status unknown", string(AppendStatusLine(nil, 599, nil)), "HTTP/1.1 599 \r\n"},
		{"field", string(AppendField([]byte("x"), []byte("A"), []byte("b"))), "xA: b\r\n"},
		{"last chunk", string(AppendLastChunk(nil)), "0\r\n\r\n"},
		{"chunk", string(AppendChunk(nil, []byte("hello world, 17 b"))), "11\r\nhello world, 17 b\r\n"},
		{"empty chunk", string(AppendChunk([]byte("x"), nil)), "x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q want %q", tc.got, tc.want)
			}
		})
	}
	t.Run("written heads parse", func(t *testing.T) {
		req := newReq(10)
		b := AppendRequestHead(nil, []byte("GET"), []byte("/p?q"), fields)
		if n, err := ParseRequest(b, req, nil); err != nil || n != len(b) {
			t.Fatal(err)
		}
	})
}

func TestStatusText(t *testing.T) {
	for code, want := range map[int]string{100: "Continue", 200: "OK", 226: "IM Used", 308: "Permanent Redirect",
		413: "Content Too Large", 418: "", 422: "Unprocessable Content", 431: "Request Header Fields Too Large",
		451: "Unavailable For Legal Reasons", 505: "HTTP Version Not Supported", 511: "Network Authentication Required", 999: ""} {
		if got := StatusText(code); got != want {
			t.Errorf("%d: %q want %q", code, got, want)
		}
	}
}
