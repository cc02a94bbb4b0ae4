package echo

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func request(method, path, query string, fields ...string) *serval.Request {
	req := new(serval.Request)
	req.Init(serval.FieldsMaxDefault)
	req.Method = []byte(method)
	req.Path = []byte(path)
	if query != "" {
		req.Query = []byte(query)
	}
	req.Version = serval.Version11
	for i := 0; i+1 < len(fields); i += 2 {
		req.Fields = append(req.Fields, serval.Header{Name: []byte(fields[i]), Value: []byte(fields[i+1])})
	}
	return req
}

func TestDump(t *testing.T) {
	h := New(Config{ID: "backend-1", Port: 8001, Logger: quietLogger()})
	req := request("GET", "/test", "a=1", "Host", "127.0.0.1:8080", "User-Agent", "curl/8.0", "accept", "*/*")
	x := new(serval.Exchange)
	a := h.OnRequest(x, req, make([]byte, 0, 4096))
	want := "=== Echo Backend: backend-1 (port 8001) ===\n\n" +
		"Method: GET\nPath: /test?a=1\nVersion: HTTP/1.1\n\n" +
		"Headers:\n  Host: 127.0.0.1:8080\n  User-Agent: curl/8.0\n  accept: */*\n\n" +
		"Body: (empty)\n"
	if a.Kind != serval.ActionRespond || a.Status != 200 || a.Chunked {
		t.Fatalf("action = %+v", a)
	}
	if got := string(a.Body); got != want {
		t.Errorf("dump:\n%s\nwant:\n%s", got, want)
	}
	if len(a.Headers) != 1 || string(a.Headers[0].Name) != "X-Backend-Id" || string(a.Headers[0].Value) != "backend-1" {
		t.Errorf("headers = %q", a.Headers)
	}
}

func TestDumpBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		max     int
		buf     int
		want    string
		notWant string
	}{
		{"small", "hello", 0, 4096, "\nBody:\nhello\n", "truncated"},
		{"exact", "0123456789", 10, 4096, "\nBody:\n0123456789\n", "truncated"},
		{"truncated", strings.Repeat("x", 100), 10, 4096, "\nBody:\nxxxxxxxxxx\n(truncated: 100 bytes, first 10 shown)\n", ""},
		{"grows-buffer", strings.Repeat("y", 20000), 0, 512, "(empty)", ""},
		{"big-truncated", strings.Repeat("z", 200000), 0, 1024, "\n(truncated: 200000 bytes, first 65536 shown)\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Config{ID: "b", DumpBodyBytesMax: tc.max, Logger: quietLogger()})
			req := request("POST", "/", "", "Host", "h", "Content-Length", "n")
			req.ContentLength = int64(len(tc.body))
			x := &serval.Exchange{Body: iotest(tc.body)}
			a := h.OnRequest(x, req, make([]byte, 0, tc.buf))
			got := string(a.Body)
			if tc.name == "grows-buffer" {
				if !strings.HasSuffix(got, "\nBody:\n"+tc.body+"\n") {
					t.Errorf("body not fully shown (len %d)", len(got))
				}
				return
			}
			if !strings.HasSuffix(got, tc.want) {
				t.Errorf("dump ends %q, want suffix %q", got[max(0, len(got)-120):], tc.want)
			}
			if tc.notWant != "" && strings.Contains(got, tc.notWant) {
				t.Errorf("dump contains %q", tc.notWant)
			}
		})
	}
}

// iotest returns a reader that hands out body in small, uneven reads, as a
// socket would.
func iotest(body string) io.Reader { return &trickle{b: []byte(body)} }

type trickle struct {
	b []byte
	n int
}

func (r *trickle) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	r.n++
	k := min(len(p), len(r.b), 1+r.n%7*1000)
	copy(p, r.b[:k])
	r.b = r.b[k:]
	return k, nil
}

func TestChunkedFlag(t *testing.T) {
	h := New(Config{Chunked: true, Logger: quietLogger()})
	a := h.OnRequest(new(serval.Exchange), request("GET", "/", ""), make([]byte, 0, 1024))
	if !a.Chunked || a.Kind != serval.ActionRespond {
		t.Fatalf("action = %+v", a)
	}
	if !bytes.HasPrefix(a.Body, []byte("=== Echo Backend: echo-1 (port 0) ===")) {
		t.Errorf("body = %q", a.Body)
	}
}

func TestEchoBody(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 10000)
	for _, tc := range []struct {
		name    string
		cl      int64
		chunked bool
		wantCL  int64
	}{
		{"content-length", int64(len(body)), false, int64(len(body))},
		{"chunked-request", -1, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Config{EchoBody: true, Logger: quietLogger()})
			req := request("POST", "/echo", "")
			req.ContentLength, req.Chunked = tc.cl, tc.chunked
			x := &serval.Exchange{Body: iotest(body)}
			a := h.OnRequest(x, req, make([]byte, 0, 1024))
			if a.Kind != serval.ActionStream || a.ContentLength != tc.wantCL {
				t.Fatalf("action = %+v", a)
			}
			var got []byte
			buf := make([]byte, 4096)
			for i := 0; ; i++ {
				if i > 10000 {
					t.Fatal("stream does not end")
				}
				n, done, err := h.NextChunk(x, buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
				if done {
					break
				}
			}
			if string(got) != body {
				t.Errorf("echoed %d bytes, want %d identical", len(got), len(body))
			}
		})
	}
}

func TestEchoEmptyBody(t *testing.T) {
	h := New(Config{EchoBody: true, Logger: quietLogger()})
	a := h.OnRequest(new(serval.Exchange), request("GET", "/", ""), make([]byte, 0, 1024))
	if a.Kind != serval.ActionRespond || len(a.Body) != 0 || a.Status != 200 {
		t.Fatalf("action = %+v", a)
	}
}
