// Command origin is the benchmark origin: a minimal Go net/http server with
// fixed in-memory bodies, GET /small (-small bytes, default 128) and GET /big
// (-big bytes, default 64 KiB), always with Content-Length so keep-alive is
// never broken by chunking; any other path gets /small. GET /_conns returns
// how many TCP connections this process has accepted so far (that request's
// own connection included), so a harness can count the upstream connections
// a proxy opened during a run.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func body(n int) []byte {
	b := []byte(strings.Repeat("0123456789abcdef", n/16+1))[:n]
	if n > 0 {
		b[n-1] = '\n'
	}
	return b
}

func main() {
	listen := flag.String("listen", "127.0.0.1:19391", "listen address")
	small := flag.Int("small", 128, "size of the /small body in bytes")
	big := flag.Int("big", 64<<10, "size of the /big body in bytes")
	flag.Parse()

	smallBody, bigBody := body(*small), body(*big)
	smallLen, bigLen := strconv.Itoa(len(smallBody)), strconv.Itoa(len(bigBody))
	textPlain := []string{"text/plain"}
	smallCL, bigCL := []string{smallLen}, []string{bigLen}
	var accepted atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, l := smallBody, smallCL
		switch r.URL.Path {
		case "/big":
			b, l = bigBody, bigCL
		case "/_conns":
			b = []byte(strconv.FormatInt(accepted.Load(), 10) + "\n")
			l = []string{strconv.Itoa(len(b))}
		}
		hdr := w.Header()
		hdr["Content-Type"] = textPlain
		hdr["Content-Length"] = l
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	})
	// Plain TCP, as every server in the comparison: Go's net.Listen
	// speaks MPTCP by default where the kernel has it (Go 1.24).
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				accepted.Add(1)
			}
		}}
	log.Printf("origin listening on %s (small=%d big=%d)", ln.Addr(), *small, *big)
	log.Fatal(srv.Serve(ln))
}
