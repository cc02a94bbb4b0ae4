package testnet

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestRefusingAddr(t *testing.T) {
	addr := RefusingAddr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener took %s", addr)
	}
}

func TestReservedAddr(t *testing.T) {
	addr, listen := ReservedAddr(t)
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded before listen", addr)
	}
	ln := listen()
	defer ln.Close()
	if ln.Addr().String() != addr {
		t.Fatalf("listener on %s, want %s", ln.Addr(), addr)
	}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial after listen: %v", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("accept: %v", err)
	}
}
