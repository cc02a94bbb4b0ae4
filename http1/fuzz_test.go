package http1

import (
	"bytes"
	"errors"
	"testing"

	"github.com/servalproxy/serval"
)

// fuzzLimits are small so the fuzzer reaches the 414 and 431 paths.
var fuzzLimits = Limits{HeadBytesMax: 1024, TargetBytesMax: 128}

const fuzzFieldsMax = 16

var requestStatuses = map[int]bool{400: true, 413: true, 414: true, 417: true, 431: true, 501: true, 505: true}

func FuzzParseRequest(f *testing.F) {
	for _, tc := range requestCases {
		f.Add([]byte(tc.head))
	}
	f.Add(browserHead)
	f.Add(curlHead)
	req, again := newReq(fuzzFieldsMax), newReq(fuzzFieldsMax)
	f.Fuzz(func(t *testing.T, buf []byte) {
		n, err := ParseRequest(buf, req, &fuzzLimits)
		if err != nil {
			var se *serval.StatusError
			if err != ErrIncomplete && (!errors.As(err, &se) || !requestStatuses[se.Status]) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if n <= 0 || n > len(buf) || req.HeadBytes != n {
			t.Fatalf("n=%d len=%d HeadBytes=%d", n, len(buf), req.HeadBytes)
		}
		for i := 0; i < n; i++ {
			if _, err := ParseRequest(buf[:i], again, &fuzzLimits); err != ErrIncomplete {
				t.Fatalf("prefix %d of %d: %v", i, n, err)
			}
		}
		if _, err := ParseRequest(buf, req, &fuzzLimits); err != nil {
			t.Fatal(err)
		}
		if req.Version != serval.Version11 {
			return // the writer speaks HTTP/1.1 only; a 1.0 head changes meaning
		}
		out := AppendRequestHead(nil, req.Method, req.Target, req.Fields)
		if _, err := ParseRequest(out, again, &fuzzLimits); err != nil {
			if err == ErrHeadTooLarge && len(out) > fuzzLimits.HeadBytesMax {
				return // leading empty lines were dropped, but nothing else grows
			}
			t.Fatalf("rewritten head rejected: %v\n%q", err, out)
		}
		sameRequest(t, req, again)
	})
}

func sameRequest(t *testing.T, a, b *serval.Request) {
	t.Helper()
	ok := bytes.Equal(a.Method, b.Method) && a.MethodID == b.MethodID && bytes.Equal(a.Target, b.Target) &&
		a.Form == b.Form && bytes.Equal(a.Path, b.Path) && bytes.Equal(a.Query, b.Query) &&
		(a.Query == nil) == (b.Query == nil) && bytes.Equal(a.Host, b.Host) && a.Version == b.Version &&
		a.ContentLength == b.ContentLength && a.Chunked == b.Chunked && a.Close == b.Close &&
		a.ExpectContinue == b.ExpectContinue && a.Upgrade == b.Upgrade && sameFields(a.Fields, b.Fields)
	if !ok {
		t.Fatalf("not a fixed point:\n%+v\n%+v", a, b)
	}
}

func sameFields(a, b []serval.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Name, b[i].Name) || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func FuzzParseResponse(f *testing.F) {
	for _, tc := range responseCases {
		f.Add([]byte(tc.head))
	}
	f.Add(responseHead)
	resp, again := newResp(fuzzFieldsMax), newResp(fuzzFieldsMax)
	f.Fuzz(func(t *testing.T, buf []byte) {
		n, err := ParseResponse(buf, resp, &fuzzLimits)
		if err != nil {
			var se *serval.StatusError
			if err != ErrIncomplete && (!errors.As(err, &se) || se.Status != 502) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if n <= 0 || n > len(buf) || resp.HeadBytes != n {
			t.Fatalf("n=%d len=%d", n, len(buf))
		}
		for i := 0; i < n; i++ {
			if _, err := ParseResponse(buf[:i], again, &fuzzLimits); err != ErrIncomplete {
				t.Fatalf("prefix %d of %d: %v", i, n, err)
			}
		}
		if resp.Version != serval.Version11 {
			return
		}
		out := AppendResponseHead(nil, resp.Status, resp.Reason, resp.Fields)
		if _, err := ParseResponse(out, again, &fuzzLimits); err != nil {
			if err == errRespHeadTooLarge && len(out) > fuzzLimits.HeadBytesMax {
				return // an empty reason became StatusText
			}
			t.Fatalf("rewritten head rejected: %v\n%q", err, out)
		}
		ok := resp.Status == again.Status && resp.Version == again.Version &&
			(len(resp.Reason) == 0 || bytes.Equal(resp.Reason, again.Reason)) &&
			resp.ContentLength == again.ContentLength && resp.Chunked == again.Chunked &&
			resp.Close == again.Close && sameFields(resp.Fields, again.Fields)
		if !ok {
			t.Fatalf("not a fixed point:\n%+v\n%+v", resp, again)
		}
	})
}

func FuzzChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), byte(3))
	f.Add(chunkedBody[:200], byte(1))
	f.Add([]byte("5;a=\"b\\\"c\"\r\nhello\r\n0\r\nT: v\r\n\r\n"), byte(7))
	f.Fuzz(func(t *testing.T, in []byte, step byte) {
		// Arbitrary input: byte-by-byte and all-at-once agree.
		whole, wholeTr, wholeErr := decodeAll(in, 0, 64)
		for _, s := range []int{1, int(step%16) + 1} {
			part, partTr, partErr := decodeAll(in, s, 64)
			if partErr != wholeErr || !bytes.Equal(part, whole) || !bytes.Equal(partTr, wholeTr) {
				t.Fatalf("step %d: %q %v, all at once: %q %v", s, part, partErr, whole, wholeErr)
			}
		}
		var se *serval.StatusError
		if wholeErr != nil && wholeErr != ErrIncomplete && (!errors.As(wholeErr, &se) || se.Status != 400 && se.Status != 431) {
			t.Fatalf("bad error %v", wholeErr)
		}
		// The input as payload: decoding its encoding gives it back.
		size := int(step) + 1
		var enc []byte
		for p := in; len(p) > 0; {
			k := min(size, len(p))
			enc = AppendChunk(enc, p[:k])
			p = p[k:]
		}
		enc = AppendLastChunk(enc)
		data, _, err := decodeAll(enc, int(step%5), 0)
		if err != nil || !bytes.Equal(data, in) {
			t.Fatalf("round trip: %v %q", err, data)
		}
	})
}
