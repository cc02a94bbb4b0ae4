package http1

import (
	"bytes"
	"testing"

	"github.com/servalproxy/serval"
)

// browserHead is a typical browser navigation: ~500 bytes, 12 fields.
var browserHead = []byte("GET /products/shoes/running?color=blue&size=42 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://www.example.com/products\r\n" +
	"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r\n" +
	"Connection: keep-alive\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Priority: u=0, i\r\n" +
	"\r\n")

var curlHead = []byte("GET /health HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n")

var responseHead = []byte("HTTP/1.1 200 OK\r\n" +
	"Date: Tue, 18 Jun 2026 10:00:00 GMT\r\n" +
	"Server: nginx\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Length: 12345\r\n" +
	"Cache-Control: private, max-age=0\r\n" +
	"Connection: keep-alive\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"\r\n")

// chunkedBody is 64 KiB of payload in 4 KiB chunks.
var chunkedBody = func() []byte {
	var b []byte
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 256)
	for i := 0; i < 16; i++ {
		b = AppendChunk(b, chunk)
	}
	return AppendLastChunk(b)
}()

func benchRequest(b *testing.B, head []byte) {
	req := newReq(serval.FieldsMaxDefault)
	lim := DefaultLimits()
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if _, err := ParseRequest(head, req, &lim); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRequestBrowser(b *testing.B) { benchRequest(b, browserHead) }
func BenchmarkParseRequestCurl(b *testing.B)    { benchRequest(b, curlHead) }

func BenchmarkParseResponse(b *testing.B) {
	resp := newResp(serval.FieldsMaxDefault)
	lim := DefaultLimits()
	b.ReportAllocs()
	b.SetBytes(int64(len(responseHead)))
	for b.Loop() {
		if _, err := ParseResponse(responseHead, resp, &lim); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedDecode64K(b *testing.B) {
	var d ChunkedDecoder
	b.ReportAllocs()
	b.SetBytes(64 << 10)
	for b.Loop() {
		if decodeChunked(&d, chunkedBody) != 64<<10 {
			b.Fatal("short")
		}
	}
}

// decodeChunked decodes a whole in-memory body and returns its payload
// length, 0 on error.
func decodeChunked(d *ChunkedDecoder, in []byte) int {
	d.Reset(0)
	total := 0
	for {
		n, kind, data, err := d.Next(in)
		if err != nil || kind == SegNone {
			return 0
		}
		total += len(data)
		in = in[n:]
		if kind == SegEnd {
			return total
		}
	}
}

func BenchmarkAppendResponseHead(b *testing.B) {
	resp := newResp(serval.FieldsMaxDefault)
	if _, err := ParseResponse(responseHead, resp, nil); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendResponseHead(dst[:0], resp.Status, resp.Reason, resp.Fields)
	}
}
