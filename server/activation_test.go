//go:build linux

package server

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/servalproxy/serval/internal/testnet"
)

// placeFD duplicates f's descriptor onto fd (close-on-exec); the caller
// closes it (through the file takeActivated made of it, if it did).
func placeFD(t *testing.T, f *os.File, fd int) {
	t.Helper()
	if err := unix.Dup3(int(f.Fd()), fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// freeFDs finds n consecutive descriptor numbers not in use.
func freeFDs(t *testing.T, n int) int {
	t.Helper()
	for first := 700; first < 1000; first += n {
		free := true
		for fd := first; fd < first+n; fd++ {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				free = false
			}
		}
		if free {
			return first
		}
	}
	t.Fatal("no free descriptors")
	return 0
}

// TestTakeActivated: the sockets passed for this pid are taken, named,
// and work as listeners; the variables for another process, or none, give
// none; a count that is not one, or a descriptor that is not a listening
// TCP socket, is an error that names it.
func TestTakeActivated(t *testing.T) {
	pid := os.Getpid()
	self := strconv.Itoa(pid)
	f1, a1 := testnet.ListenerFile(t)
	f2, a2 := testnet.ListenerFile(t)
	addr1, addr2 := a1.String(), a2.String()
	first := freeFDs(t, 2)
	placeFD(t, f1, first)
	placeFD(t, f2, first+1)

	files, err := takeActivated(self, "2", "web:", pid, first)
	if err != nil || len(files) != 2 {
		unix.Close(first)
		unix.Close(first + 1)
		t.Fatalf("takeActivated: %v, %d files", err, len(files))
	}
	defer files[0].Close()
	defer files[1].Close()
	if files[0].Name() != "web" || files[1].Name() != "listen-fd-"+strconv.Itoa(first+1) {
		t.Errorf("names %q, %q", files[0].Name(), files[1].Name())
	}
	for i, want := range []string{addr1, addr2} {
		ln, err := net.FileListener(files[i])
		if err != nil {
			t.Fatal(err)
		}
		if ln.Addr().String() != want {
			t.Errorf("listener %d on %s, want %s", i, ln.Addr(), want)
		}
		c, err := net.DialTimeout("tcp", want, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		sc, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept on the passed socket: %v", err)
		}
		sc.Close()
		c.Close()
		ln.Close()
	}
	if flags, err := unix.FcntlInt(uintptr(first), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("passed descriptor not close-on-exec: flags %d, %v", flags, err)
	}

	for _, c := range []struct{ pid, fds string }{{"", ""}, {"", "1"}, {self, ""}, {strconv.Itoa(pid + 1), "2"}} {
		if files, err := takeActivated(c.pid, c.fds, "", pid, first); files != nil || err != nil {
			t.Errorf("LISTEN_PID=%q LISTEN_FDS=%q: %d files, %v; want none", c.pid, c.fds, len(files), err)
		}
	}
	for _, fds := range []string{"x", "-1", "100000"} {
		if _, err := takeActivated(self, fds, "", pid, first); err == nil || !strings.Contains(err.Error(), "LISTEN_FDS") {
			t.Errorf("LISTEN_FDS=%q: %v, want an error naming LISTEN_FDS", fds, err)
		}
	}
}

// TestTakeActivatedRefuses: a descriptor that is not a listening TCP
// socket (a closed one, a pipe, a UDP socket, a TCP socket not listening,
// a Unix socket) is refused with its number and why.
func TestTakeActivatedRefuses(t *testing.T) {
	pid := os.Getpid()
	self := strconv.Itoa(pid)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	uf, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()
	tcpFD, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tcp := os.NewFile(uintptr(tcpFD), "unbound")
	defer tcp.Close()
	unixLn, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer unixLn.Close()
	unf, err := unixLn.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer unf.Close()
	for _, c := range []struct {
		name string
		f    *os.File
		want string
	}{
		{"closed", nil, "not an open socket"},
		{"pipe", r, "not an open socket"},
		{"udp", uf, "not a stream socket"},
		{"tcp not listening", tcp, "not listening"},
		{"unix", unf, "not a TCP socket"},
	} {
		fd := freeFDs(t, 1)
		if c.f != nil {
			placeFD(t, c.f, fd)
		}
		_, err := takeActivated(self, "1", "", pid, fd) // takes no file when it refuses
		if c.f != nil {
			unix.Close(fd)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "descriptor "+strconv.Itoa(fd)) {
			t.Errorf("%s: %v, want an error naming descriptor %d and %q", c.name, err, fd, c.want)
		}
	}
}
