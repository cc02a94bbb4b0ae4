//go:build linux

package testnet

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// RefusingAddr returns "127.0.0.1:port" where every connection attempt is
// refused (the kernel answers the SYN with a reset) until t ends. The port
// is held by a bound socket that does not listen and has no SO_REUSEADDR,
// so no other listener, in this process or another, can take it meanwhile:
// a listener closed to make a "dead" port does not hold it, and tests
// running in parallel may be handed the same port and answer on it.
func RefusingAddr(t testing.TB) string {
	t.Helper()
	addr, _ := ReservedAddr(t)
	return addr
}

// ReservedAddr is RefusingAddr whose port can later start listening:
// listen turns the held socket into a listener (once; the listener is the
// caller's to close), for a test of a backend that comes back on its port.
// The port is never free in between, so no other listener can take it.
func ReservedAddr(t testing.TB) (addr string, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("testnet: socket: %v", err)
	}
	held := true
	t.Cleanup(func() {
		if held {
			syscall.Close(fd)
		}
	})
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("testnet: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("testnet: getsockname: %v", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	listen = func() net.Listener {
		t.Helper()
		if !held {
			t.Fatal("testnet: ReservedAddr's listen called twice")
		}
		if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
			t.Fatalf("testnet: listen: %v", err)
		}
		f := os.NewFile(uintptr(fd), "reserved")
		held = false
		ln, err := net.FileListener(f) // a dup of fd
		f.Close()
		if err != nil {
			t.Fatalf("testnet: %v", err)
		}
		return ln
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), listen
}
