//go:build !linux

package testnet

import (
	"net"
	"testing"
)

// RefusingAddr returns a loopback address where connections are refused:
// here, a port whose listener was closed (another program may take it).
func RefusingAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// ReservedAddr returns a refusing address whose port can later listen;
// here the port is free in between (another program may take it).
func ReservedAddr(t testing.TB) (addr string, listen func() net.Listener) {
	t.Helper()
	addr = RefusingAddr(t)
	return addr, func() net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("testnet: %v", err)
		}
		return ln
	}
}
