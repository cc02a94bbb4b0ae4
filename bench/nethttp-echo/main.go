// Command nethttp-echo is the net/http baseline for bench/echo.sh: a minimal
// Go net/http server that answers the same bytes as examples/echo-backend
// (the same dump of method, path, version, headers and body, the same
// X-Backend-Id header), written the ordinary net/http way.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// dumpBodyBytesMax matches the echo backend's bound on the body shown.
const dumpBodyBytesMax = 64 << 10

func main() {
	port := flag.Int("port", 8002, "listening port")
	id := flag.String("id", "echo-1", "instance identifier")
	flag.Parse()

	title := "=== Echo Backend: " + *id + " (port " + strconv.Itoa(*port) + ") ===\n\n"
	bufs := sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	backendID := []string{*id}
	textPlain := []string{"text/plain; charset=utf-8"}

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bp := bufs.Get().(*[]byte)
		out := append((*bp)[:0], title...)
		out = append(out, "Method: "...)
		out = append(out, r.Method...)
		out = append(out, "\nPath: "...)
		out = append(out, r.URL.RequestURI()...)
		out = append(out, "\nVersion: "...)
		out = append(out, r.Proto...)
		out = append(out, "\n\nHeaders:\n  Host: "...)
		out = append(out, r.Host...)
		out = append(out, '\n')
		// net/http keeps fields in a map: print them sorted.
		names := make([]string, 0, len(r.Header))
		for k := range r.Header {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			for _, v := range r.Header[k] {
				out = append(out, "  "...)
				out = append(out, k...)
				out = append(out, ": "...)
				out = append(out, v...)
				out = append(out, '\n')
			}
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, dumpBodyBytesMax))
		rest, _ := io.Copy(io.Discard, r.Body)
		if len(body) == 0 {
			out = append(out, "\nBody: (empty)\n"...)
		} else {
			out = append(out, "\nBody:\n"...)
			out = append(out, body...)
			if rest > 0 {
				out = append(out, "\n(truncated: "...)
				out = strconv.AppendInt(out, int64(len(body))+rest, 10)
				out = append(out, " bytes, first "...)
				out = strconv.AppendInt(out, int64(len(body)), 10)
				out = append(out, " shown)\n"...)
			} else if body[len(body)-1] != '\n' {
				out = append(out, '\n')
			}
		}
		hdr := w.Header()
		hdr["Content-Type"] = textPlain
		hdr["X-Backend-Id"] = backendID
		hdr["Content-Length"] = []string{strconv.Itoa(len(out))}
		w.WriteHeader(http.StatusOK)
		w.Write(out)
		*bp = out
		bufs.Put(bp)
	})
	// Plain TCP, as every server in the comparison: Go's net.Listen
	// speaks MPTCP by default where the kernel has it (Go 1.24).
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	log.Printf("nethttp-echo listening on %s", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
