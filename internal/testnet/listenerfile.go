package testnet

import (
	"net"
	"os"
	"testing"
)

// ListenerFile opens a TCP listener on 127.0.0.1 (a free port) and returns
// its socket as a file, the way a service manager passes one (systemd
// socket activation), with its address; the listener itself is closed, the
// file keeps the socket listening. Cleanup closes the file unless the test
// closed it (closing twice is harmless on an *os.File).
func ListenerFile(t testing.TB) (*os.File, *net.TCPAddr) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, ln.Addr().(*net.TCPAddr)
}
