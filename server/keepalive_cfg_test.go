//go:build linux

package server

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// A TCPKeepAlive that New accepts is the one the sockets get: Linux
// refuses TCP_KEEPIDLE and TCP_KEEPINTVL above 32767 s, and
// SetKeepAliveConfig then leaves keepalive on at the kernel's defaults
// (probes after 2 h idle, every 75 s), the error unseen.
func TestTCPKeepAliveAboveKernelMax(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kernel's bound is Linux's")
	}
	const ka = 10 * time.Hour
	cfg := testConfig()
	cfg.TCPKeepAlive = ka
	if _, err := New(&handler{}, nil, nil, nil, cfg); err != nil {
		return // refused: fine
	}
	var srvp atomic.Pointer[Server[*handler]]
	got := make(chan int, 1)
	h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		got <- sockOpt(t, slotOf(srvp.Load(), x).sock, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		return serval.Respond(200, "text/plain", []byte("ok"))
	}}
	srv, ts := serve(t, h, nil, nil, cfg)
	srvp.Store(srv)
	oneRequest(t, ts.addr)
	if idle := <-got; idle != int(ka/time.Second) {
		t.Fatalf("Config.TCPKeepAlive %v accepted, but TCP_KEEPIDLE = %d s", ka, idle)
	}
}
