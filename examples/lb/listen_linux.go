//go:build linux

package main

import (
	"net"
	"os"
	"strconv"
	"syscall"
)

// listenShared opens the listening socket every worker accepts from
// (balance_linux.go says how they share it) and returns it as a file to
// hand down, with the address it listens on. Without SO_REUSEPORT, the
// bind fails when anything else holds the port.
//
// The socket is made with raw system calls in blocking mode, so the
// master's runtime never polls it (os.NewFile leaves a blocking
// descriptor alone); the workers' runtimes make the shared open file
// non-blocking and wait on it, the master never reads it. The master
// keeps it open for its whole life: while a worker restarts, the others
// accept its share.
func listenShared(addr string) (f *os.File, bound string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", err
	}
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	fd, sa, err := socketFor(host, ta)
	if err != nil {
		return nil, "", os.NewSyscallError("listen "+addr, err)
	}
	port := ta.Port
	if port == 0 {
		if got, err := syscall.Getsockname(fd); err == nil {
			sa = got
		}
		switch a := sa.(type) {
		case *syscall.SockaddrInet4:
			port = a.Port
		case *syscall.SockaddrInet6:
			port = a.Port
		}
	}
	return os.NewFile(uintptr(fd), "lb-listener"), net.JoinHostPort(boundHost(host, sa), strconv.Itoa(port)), nil
}

// boundHost is the host part of the listening address as logged: the
// given host, or the unspecified address the socket was bound to.
func boundHost(host string, sa syscall.Sockaddr) string {
	if host != "" {
		return host
	}
	if _, ok := sa.(*syscall.SockaddrInet6); ok {
		return "::"
	}
	return "0.0.0.0"
}

// socketFor makes a socket listening on ta (SO_REUSEADDR). With no host it
// binds every interface: an IPv6 socket that also takes IPv4 when the
// system allows it (as net.Listen does), else IPv4 only.
func socketFor(host string, ta *net.TCPAddr) (int, syscall.Sockaddr, error) {
	if host == "" || ta.IP == nil || ta.IP.IsUnspecified() && ta.IP.To4() == nil {
		sa := &syscall.SockaddrInet6{Port: ta.Port}
		if fd, err := bindListen(syscall.AF_INET6, sa, true); err == nil {
			return fd, sa, nil
		} else if host != "" {
			return -1, nil, err
		}
		sa4 := &syscall.SockaddrInet4{Port: ta.Port}
		fd, err := bindListen(syscall.AF_INET, sa4, false)
		return fd, sa4, err
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &syscall.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		fd, err := bindListen(syscall.AF_INET, sa, false)
		return fd, sa, err
	}
	sa := &syscall.SockaddrInet6{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To16())
	if ta.Zone != "" {
		ifi, err := net.InterfaceByName(ta.Zone)
		if err != nil {
			return -1, nil, err
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	fd, err := bindListen(syscall.AF_INET6, sa, false)
	return fd, sa, err
}

// listenBacklog is the accept queue asked for; the kernel caps it at
// net.core.somaxconn.
const listenBacklog = 4096

// bindListen makes a socket of family listening on sa.
func bindListen(family int, sa syscall.Sockaddr, dualStack bool) (int, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err == nil && dualStack {
		err = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
	}
	if err == nil {
		err = syscall.Bind(fd, sa)
	}
	if err == nil {
		err = syscall.Listen(fd, listenBacklog)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// workerMasterGone returns a channel closed when this worker's master is
// gone, or nil outside a worker.
func workerMasterGone() <-chan struct{} {
	if workerIndex() < 0 {
		return nil
	}
	var st syscall.Stat_t
	if syscall.Fstat(workerLifeFD, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return nil // not started by a master that passes it
	}
	// Non-blocking, so the runtime's poller waits for it, not a thread.
	syscall.SetNonblock(workerLifeFD, true)
	f := os.NewFile(workerLifeFD, "lb-master-life")
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [16]byte
		for {
			if _, err := f.Read(b[:]); err != nil {
				return // EOF: the last write end closed with the master
			}
		}
	}()
	return gone
}

// selfExe names the running program's own file, even once its path was
// replaced or removed: workers are started from it.
const selfExe = "/proc/self/exe"
