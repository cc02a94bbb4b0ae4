// Command goproxy is the net/http/httputil.ReverseProxy baseline: the floor a
// Go proxy framework must beat. Round-robin over -upstreams, keep-alive
// upstream connections (MaxIdleConnsPerHost raised from the default 2,
// which would force new upstream connections under concurrency) and a pooled
// 32 KiB copy buffer. Header rewriting: ReverseProxy's hop-by-hop removal,
// the client's Host passed on and X-Forwarded-For/-Host/-Proto
// (SetXForwarded), the same work the other proxies are configured to do.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufPool) Put(x []byte) { b.p.Put(&x) }

func main() {
	listen := flag.String("listen", "127.0.0.1:19383", "listen address")
	ups := flag.String("upstreams", "http://127.0.0.1:19391,http://127.0.0.1:19392", "comma-separated upstream URLs")
	idle := flag.Int("idle", 256, "MaxIdleConnsPerHost")
	flag.Parse()

	var targets []*url.URL
	for _, s := range strings.Split(*ups, ",") {
		u, err := url.Parse(s)
		if err != nil {
			log.Fatal(err)
		}
		targets = append(targets, u)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        *idle * len(targets),
		MaxIdleConnsPerHost: *idle,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	var n atomic.Uint64
	bp := &bufPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := targets[n.Add(1)%uint64(len(targets))]
			pr.SetURL(t)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded() // as Serval, nginx and HAProxy are configured to
		},
		Transport:  tr,
		BufferPool: bp,
		ErrorLog:   log.Default(),
	}
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	log.Printf("goproxy listening on %s -> %s", *listen, *ups)
	// Plain TCP, as every proxy in the comparison: Go's ListenAndServe
	// speaks MPTCP by default where the kernel has it (Go 1.24).
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}
