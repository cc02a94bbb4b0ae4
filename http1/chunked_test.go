package http1

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

// decodeAll runs a decoder over in with step bytes appended per round (0:
// all at once), the way a connection loop does: unconsumed bytes stay at
// the front of the buffer. It returns the payload, the trailer lines, and
// nil once SegEnd was seen, ErrIncomplete if the input ran out first.
func decodeAll(in []byte, step, trailerMax int) (data, trailers []byte, err error) {
	var d ChunkedDecoder
	d.Reset(trailerMax)
	// in[start:fed] is what the decoder has been shown and not consumed:
	// always a contiguous view, so no copying is needed.
	start, fed := 0, len(in)
	if step > 0 {
		fed = min(step, len(in))
	}
	for {
		n, kind, seg, err := d.Next(in[start:fed])
		if err != nil {
			return data, trailers, err
		}
		switch kind {
		case SegData:
			data = append(data, seg...)
		case SegTrailer:
			trailers = append(trailers, seg...)
		case SegEnd:
			return data, trailers, nil
		}
		start += n
		if kind == SegNone {
			if fed == len(in) {
				return data, trailers, ErrIncomplete
			}
			fed = min(fed+step, len(in))
		}
	}
}

func TestChunked(t *testing.T) {
	long := strings.Repeat("a", serval.ChunkExtensionBytesMax)
	cases := []struct {
		name     string
		in       string
		data     string
		trailers string
		status   int // 0: accepted; -1: incomplete
	}{
		{name: "simple", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", data: "hello world"},
		{name: "upper hex", in: "A\r\n0123456789\r\n0\r\n\r\n", data: "0123456789"},
		{name: "lower hex", in: "a\r\n0123456789\r\n0\r\n\r\n", data: "0123456789"},
		{name: "leading zeros", in: "0005\r\nhello\r\n000\r\n\r\n", data: "hello"},
		{name: "extensions", in: "5;a=b;c;d=\"x \\\" y\"\r\nhello\r\n0;z\r\n\r\n", data: "hello"},
		{name: "ext BWS", in: "5 ; a = b ;c\r\nhello\r\n0\r\n\r\n", data: "hello"},
		{name: "ext trailing space", in: "5;a \r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "size trailing space", in: "5 \r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "ext empty name", in: "5;\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "ext empty value", in: "5;a=\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "ext unterminated quote", in: "5;a=\"b\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "ext at limit", in: "5;" + long[1:] + "\r\nhello\r\n0\r\n\r\n", data: "hello"},
		{name: "ext over limit", in: "5;" + long + "\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "ext ctl", in: "5;a\x01\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "trailers", in: "5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n", data: "hello", trailers: "X-A: 1\r\nX-B: 2\r\n"},
		{name: "trailer obs-fold", in: "0\r\nX-A: 1\r\n 2\r\n\r\n", status: 400},
		{name: "trailer bad name", in: "0\r\nX A: 1\r\n\r\n", status: 400},
		{name: "trailer bare LF", in: "0\r\nX-A: 1\n\r\n", status: 400},
		{name: "trailer exactly at bound", in: "0\r\nX-A: " + strings.Repeat("v", 64-7) + "\r\n\r\n", trailers: "X-A: " + strings.Repeat("v", 64-7) + "\r\n"},
		{name: "trailer one over bound", in: "0\r\nX-A: " + strings.Repeat("v", 64-6) + "\r\n\r\n", status: 431},
		{name: "trailer too large", in: "0\r\nX-A: " + strings.Repeat("v", 100) + "\r\n\r\n", status: 431},
		{name: "max digits", in: "000000000000000" + "5\r\nhello\r\n0\r\n\r\n", data: "hello"},
		{name: "too many digits", in: "0000000000000000" + "5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "huge size", in: "ffffffffffffffff\r\n", status: 400},
		{name: "largest size", in: "7fffffffffffffff\r\nab", status: -1, data: "ab"},
		{name: "negative size", in: "-5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "plus size", in: "+5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "0x size", in: "0x5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "empty size", in: "\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "size bare LF", in: "5\nhello\r\n0\r\n\r\n", status: 400},
		{name: "size bare CR", in: "5\rhello\r\n0\r\n\r\n", status: 400},
		{name: "data too long", in: "5\r\nhello!\r\n0\r\n\r\n", status: 400},
		{name: "data LF only", in: "5\r\nhello\n0\r\n\r\n", status: 400},
		{name: "data CR only", in: "5\r\nhello\r0\r\n\r\n", status: 400},
		{name: "final bare LF", in: "0\r\n\n", status: 400},
		{name: "truncated data", in: "5\r\nhel", status: -1, data: "hel"},
		{name: "truncated size", in: "5\r", status: -1},
		{name: "truncated trailer", in: "0\r\nX-A: 1\r\n", status: -1, trailers: "X-A: 1\r\n"},
	}
	for _, tc := range cases {
		for _, step := range []int{0, 1, 3} {
			t.Run(tc.name, func(t *testing.T) {
				data, trailers, err := decodeAll([]byte(tc.in), step, 64)
				switch tc.status {
				case 0:
					if err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
				case -1:
					if err != ErrIncomplete {
						t.Fatalf("step %d: got %v, want incomplete", step, err)
					}
				default:
					var se *serval.StatusError
					if !errors.As(err, &se) || se.Status != tc.status {
						t.Fatalf("step %d: got %v, want %d", step, err, tc.status)
					}
					return
				}
				if string(data) != tc.data || string(trailers) != tc.trailers {
					t.Fatalf("step %d: data %q trailers %q", step, data, trailers)
				}
			})
		}
	}
}

func TestChunkedSegments(t *testing.T) {
	var d ChunkedDecoder
	d.Reset(0)
	in := []byte("3\r\nabc\r\n0\r\nT: v\r\n\r\nNEXT")
	want := []struct {
		n    int
		kind SegmentKind
		data string
	}{{6, SegData, "abc"}, {5, SegLastChunk, ""}, {6, SegTrailer, "T: v\r\n"}, {2, SegEnd, ""}, {0, SegEnd, ""}}
	for i, w := range want {
		n, kind, data, err := d.Next(in)
		if err != nil || n != w.n || kind != w.kind || string(data) != w.data {
			t.Fatalf("step %d: n=%d kind=%d data=%q err=%v", i, n, kind, data, err)
		}
		in = in[n:]
	}
	if string(in) != "NEXT" || !d.Done() {
		t.Fatalf("left %q", in)
	}
}

func TestChunkedSticky(t *testing.T) {
	var d ChunkedDecoder
	if _, _, _, err := d.Next([]byte("x\r\n")); err == nil {
		t.Fatal("want error")
	}
	if _, _, _, err := d.Next([]byte("5\r\n")); err != ErrBadChunkExt && err != ErrBadChunkSize {
		t.Fatalf("not sticky: %v", err)
	}
}

func TestChunkEncode(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 15, 16, 255, 256, 4096, 65535, 1 << 20} {
		got := string(AppendChunkHeader(nil, n))
		want := hexString(n) + "\r\n"
		if got != want {
			t.Fatalf("%d: %q want %q", n, got, want)
		}
	}
	var enc []byte
	payload := bytes.Repeat([]byte("xyz"), 3000)
	for p := payload; len(p) > 0; {
		k := min(len(p), 1000)
		enc = AppendChunk(enc, p[:k])
		p = p[k:]
	}
	enc = AppendChunk(enc, nil)
	enc = AppendLastChunk(enc)
	data, _, err := decodeAll(enc, 0, 0)
	if err != nil || !bytes.Equal(data, payload) {
		t.Fatalf("round trip: %v", err)
	}
}

func hexString(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n >>= 4 {
		s = string(digits[n&15]) + s
	}
	return s
}
