package http1

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/servalproxy/serval"
)

// llhttpCorpus is where the llhttp fixtures live when the repository is
// checked out next to shared/ (see shared/corpora/llhttp/SOURCE.md). The
// corpus is MIT-licensed third-party data: it is read in place, never
// copied into this repository. SERVAL_LLHTTP_CASES overrides the path.
const llhttpCorpus = "../../shared/corpora/llhttp/cases.jsonl"

type llhttpCase struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Strict    bool   `json:"strict_mode_case"`
	RawHex    string `json:"raw_hex"`
	Expect    string `json:"expect"`
	Completed int    `json:"messages_completed"`
	Reason    string `json:"error_reason"`
}

// TestLLHTTPCorpus runs llhttp's strict-mode request and response cases
// and compares the verdict. Serval is deliberately stricter than llhttp
// in places; each such case is listed in llhttpDeviations with the
// reason, and any other mismatch fails.
func TestLLHTTPCorpus(t *testing.T) {
	path := os.Getenv("SERVAL_LLHTTP_CASES")
	if path == "" {
		path = filepath.FromSlash(llhttpCorpus)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("llhttp corpus not found at %s (check out shared/ next to the repository or set SERVAL_LLHTTP_CASES): %v", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	agree, deviate, seen := 0, 0, map[string]bool{}
	for sc.Scan() {
		var c llhttpCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("bad corpus line: %v", err)
		}
		if !c.Strict || (c.Kind != "request" && c.Kind != "response") {
			continue
		}
		raw, err := hex.DecodeString(c.RawHex)
		if err != nil {
			t.Fatalf("%s: bad hex: %v", c.ID, err)
		}
		verdict, done, why := runLLHTTP(c.Kind, raw)
		match := verdict == c.Expect && done == c.Completed
		reason, allowed := llhttpDeviations[c.ID]
		seen[c.ID] = true
		switch {
		case match && allowed:
			t.Errorf("%s (%s): agrees now; drop it from llhttpDeviations (%s)", c.ID, c.Name, reason)
		case match:
			agree++
		case allowed:
			deviate++
		default:
			t.Errorf("%s (%s): llhttp %s after %d messages (%s), serval %s after %d (%s)",
				c.ID, c.Name, c.Expect, c.Completed, c.Reason, verdict, done, why)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for id := range llhttpDeviations {
		if !seen[id] {
			t.Errorf("deviation %s is not in the corpus", id)
		}
	}
	t.Logf("llhttp strict cases: %d agree, %d deliberate deviations", agree, deviate)
}

// runLLHTTP feeds raw through the parsers as a connection would: parse a
// head, skip its body by its framing, parse the next. It returns
// "accept", "reject" or "upgrade" (the bytes after a CONNECT or Upgrade
// head, or a 101, belong to another protocol), with the messages
// completed and, for a rejection, why.
func runLLHTTP(kind string, raw []byte) (verdict string, done int, why string) {
	req, resp := newReq(serval.FieldsMaxDefault), newResp(serval.FieldsMaxDefault)
	for len(raw) > 0 {
		var n int
		var err error
		var body BodyKind
		var length int64
		closeAfter, upgrade := false, false
		if kind == "request" {
			n, err = ParseRequest(raw, req, nil)
			if err == ErrMissingHost {
				// llhttp does not check Host, and most of its cases
				// leave it out: Serval's 400 for that (RFC 9112 §3.2)
				// would hide what the case is about. The head is parsed
				// again with a Host field after its request line, and
				// the Host the case did not send is skipped with it.
				var with []byte
				if with, err = withHost(raw); err == nil {
					if n, err = ParseRequest(with, req, nil); err == nil {
						n -= len(hostLine)
					}
				}
			}
			body, length, closeAfter = RequestBody(req), req.ContentLength, req.Close
			upgrade = req.Upgrade || req.MethodID == serval.MethodConnect
		} else {
			n, err = ParseResponse(raw, resp, nil)
			body, length, closeAfter = ResponseBody(resp, serval.MethodGet), resp.ContentLength, resp.Close
			upgrade = resp.Status == 101
		}
		if err == ErrIncomplete {
			return "accept", done, ""
		}
		if err != nil {
			return "reject", done, err.Error()
		}
		raw = raw[n:]
		if upgrade {
			return "upgrade", done + 1, ""
		}
		rest, complete, err := skipBody(raw, body, length)
		if err != nil {
			return "reject", done, err.Error()
		}
		if !complete {
			return "accept", done, ""
		}
		done++
		raw = rest
		if closeAfter && len(raw) > 0 {
			// The connection closes after this message; bytes after it
			// are never read (llhttp: "Data after Connection: close").
			return "reject", done, "data after close"
		}
	}
	return "accept", done, ""
}

// hostLine is the field withHost adds.
const hostLine = "Host: a\r\n"

// withHost is raw with hostLine after its request line (the first line
// that is not empty: a server skips empty lines before it, RFC 9112
// §2.2), or ErrMissingHost when it has no line end to put it after.
func withHost(raw []byte) ([]byte, error) {
	start := 0
	for i, b := range raw {
		if b == '\n' {
			if line := raw[start:i]; len(line) == 0 || string(line) == "\r" {
				start = i + 1
				continue
			}
			with := make([]byte, 0, len(raw)+len(hostLine))
			with = append(with, raw[:i+1]...)
			with = append(with, hostLine...)
			return append(with, raw[i+1:]...), nil
		}
	}
	return nil, ErrMissingHost
}

// skipBody drops a body framed as kind from the front of raw.
func skipBody(raw []byte, kind BodyKind, length int64) (rest []byte, complete bool, err error) {
	switch kind {
	case BodyLength:
		if int64(len(raw)) < length {
			return nil, false, nil
		}
		return raw[length:], true, nil
	case BodyClose:
		return nil, false, nil
	case BodyChunked:
		var d ChunkedDecoder
		d.Reset(0)
		for {
			n, seg, _, err := d.Next(raw)
			if err != nil {
				return nil, false, err
			}
			raw = raw[n:]
			switch seg {
			case SegEnd:
				return raw, true, nil
			case SegNone:
				return nil, false, nil
			}
		}
	}
	return raw, true, nil
}

// Why Serval's verdict differs from llhttp's; llhttp is a parser, Serval
// a proxy that must not forward what another hop may read differently.
const (
	reasonFragment  = "a fragment (#) in the request target is a 400: a request-target has none (RFC 9112 §3.2)"
	reasonVersion   = "only HTTP/1.0 and HTTP/1.1 are spoken: RTSP/ICE/HTTP/0.9 versions are 505 (requests) or 502 (responses)"
	reasonAnyMethod = "any token is a method (RFC 9110 §9.1); llhttp ties ANNOUNCE to RTSP"
	reasonAsterisk  = "asterisk-form is for OPTIONS only (RFC 9112 §3.2.4)"
	reasonPRI       = "the HTTP/2 preface (PRI * HTTP/2.0) is not HTTP/1.1: rejected, no h2c prior knowledge"
	reasonHTTP09    = "HTTP/0.9 request lines (no version) are rejected"
	reasonCodings   = "a coding before chunked is 501: Serval implements no transfer coding but chunked"
	reasonUserinfo  = "userinfo in an absolute-form target is an error (RFC 9110 §4.2.4)"
	reasonRespTE    = "a response whose Transfer-Encoding does not end in chunked once is a 502, not read until close"
)

// llhttpDeviations lists the strict llhttp cases where Serval's verdict
// differs on purpose, with the reason.
var llhttpDeviations = map[string]string{
	"request/invalid.md:68":             reasonAnyMethod,
	"request/invalid.md:358":            reasonAnyMethod,
	"request/method.md:137":             reasonAsterisk,
	"request/method.md:374":             reasonVersion,
	"request/method.md:404":             reasonVersion,
	"request/method.md:432":             reasonVersion,
	"request/method.md:460":             reasonPRI,
	"request/sample.md:316":             reasonHTTP09,
	"request/transfer-encoding.md:753":  reasonFragment + "; past it, " + reasonCodings,
	"request/transfer-encoding.md:795":  reasonFragment + "; past it, " + reasonCodings,
	"request/uri.md:167":                reasonFragment,
	"request/uri.md:224":                reasonUserinfo,
	"response/sample.md:42":             reasonVersion,
	"response/sample.md:62":             reasonVersion,
	"response/sample.md:647":            reasonVersion,
	"response/transfer-encoding.md:45":  reasonRespTE,
	"response/transfer-encoding.md:76":  reasonRespTE,
	"response/transfer-encoding.md:114": reasonRespTE,
}
