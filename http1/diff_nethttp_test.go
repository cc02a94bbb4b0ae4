package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/servalproxy/serval"
)

// FuzzAgainstNetHTTP: when Serval accepts a request head that net/http
// (the most common Go origin) also accepts, both must frame the body the
// same way: a proxy and its origin that disagree on where a request ends
// are a request-smuggling pair.
func FuzzAgainstNetHTTP(f *testing.F) {
	for _, tc := range requestCases {
		f.Add([]byte(tc.head))
	}
	f.Add(browserHead)
	f.Add(curlHead)
	req := newReq(fuzzFieldsMax)
	f.Fuzz(func(t *testing.T, buf []byte) {
		n, err := ParseRequest(buf, req, &fuzzLimits)
		if err != nil || req.Version != serval.Version11 {
			return
		}
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf[:n])))
		if err != nil {
			return // the origin refuses it: no disagreement on framing
		}
		chunked := len(hr.TransferEncoding) > 0 && hr.TransferEncoding[len(hr.TransferEncoding)-1] == "chunked"
		if chunked != req.Chunked {
			t.Fatalf("chunked: serval %v, net/http %v (%q)\n%q", req.Chunked, chunked, hr.TransferEncoding, buf[:n])
		}
		if !chunked {
			cl := hr.ContentLength
			scl := req.ContentLength
			if scl < 0 {
				scl = 0
			}
			if cl < 0 {
				cl = 0
			}
			if cl != scl {
				t.Fatalf("content length: serval %d, net/http %d\n%q", req.ContentLength, hr.ContentLength, buf[:n])
			}
		}
		if hr.Method != string(req.Method) {
			t.Fatalf("method: serval %q, net/http %q\n%q", req.Method, hr.Method, buf[:n])
		}
	})
}

// FuzzChunkedAgainstNetHTTP: when Serval's chunked decoder and net/http's
// both accept a chunked request body, they must agree on its bytes and
// on where it ends (the next request starts there).
func FuzzChunkedAgainstNetHTTP(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n"))
	f.Add(chunkedBody[:200])
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	f.Fuzz(func(t *testing.T, in []byte) {
		var d ChunkedDecoder
		d.Reset(1024)
		var data []byte
		used, ok := 0, false
		for !ok {
			n, kind, seg, err := d.Next(in[used:])
			if err != nil || kind == SegNone && n == 0 {
				return // rejected or incomplete: nothing to compare
			}
			used += n
			switch kind {
			case SegData:
				data = append(data, seg...)
			case SegEnd:
				ok = true
			}
		}
		r := bytes.NewReader(append([]byte(head), in...))
		br := bufio.NewReader(r)
		hr, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("net/http refused the head: %v", err)
		}
		body, err := io.ReadAll(hr.Body)
		if err != nil {
			return // net/http refuses this body: no disagreement on framing
		}
		// What follows the body: in bufio's buffer, and in r beyond it
		// (the head and a body past 4 KiB fill more than one buffer).
		rest := br.Buffered() + r.Len()
		if !bytes.Equal(body, data) || len(in)-rest != used {
			t.Fatalf("serval: %d body bytes, ends at %d; net/http: %d body bytes, ends at %d\n%q",
				len(data), used, len(body), len(in)-rest, in)
		}
	})
}

// FuzzResponseAgainstNetHTTP: when Serval and net/http (as a client) both
// accept a response head to a GET, they must frame its body the same way:
// the proxy forwards the head's framing fields as received, so a client
// that read them differently would take part of one response for the next.
func FuzzResponseAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	resp := new(serval.Response)
	resp.Init(fuzzFieldsMax)
	getReq, _ := http.NewRequest("GET", "http://a/", nil)
	f.Fuzz(func(t *testing.T, buf []byte) {
		n, err := ParseResponse(buf, resp, &fuzzLimits)
		if err != nil || resp.Status < 200 {
			return // interim responses: net/http's client skips them itself
		}
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), getReq)
		if err != nil {
			return // the client refuses it
		}
		defer hr.Body.Close()
		kind := ResponseBody(resp, serval.MethodGet)
		chunked := len(hr.TransferEncoding) > 0 && hr.TransferEncoding[len(hr.TransferEncoding)-1] == "chunked"
		var agree bool
		switch kind {
		case BodyNone:
			// A 204 or 304 has no body whatever its framing fields say
			// (RFC 9112 §6.3), for net/http's client too; otherwise both
			// must see an empty one.
			agree = resp.Status == 204 || resp.Status == 304 || !chunked && hr.ContentLength == 0
		case BodyLength:
			agree = !chunked && hr.ContentLength == resp.ContentLength
		case BodyChunked:
			agree = chunked
		case BodyClose:
			agree = !chunked && hr.ContentLength == -1
		}
		if !agree {
			t.Fatalf("serval frames kind %d (CL %d, chunked %v); net/http CL %d, TE %q\n%q",
				kind, resp.ContentLength, resp.Chunked, hr.ContentLength, hr.TransferEncoding, buf[:n])
		}
	})
}
