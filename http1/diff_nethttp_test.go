package http1

import (
	"bufio"
	"bytes"
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
