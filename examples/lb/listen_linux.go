//go:build linux

package main

import (
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenWorkers opens n listening sockets on addr with SO_REUSEPORT, one
// per worker: the kernel spreads new connections over them by a hash of
// the connection's addresses. Port 0 picks a free port (claimPort) that
// all of them bind. It returns the sockets as files to hand to the
// workers and the address they listen on.
//
// The sockets are made with raw system calls and stay in blocking mode,
// so this process's runtime never polls them (os.NewFile leaves a
// blocking descriptor alone): only the workers wait on them. The master
// keeps them open for its whole life: a connection the kernel queued on a
// worker's socket while that worker restarts waits for the next one
// instead of being reset.
func listenWorkers(addr string, n int) (files []*os.File, bound string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", err
	}
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	// SO_REUSEPORT would also let this balancer share the port with
	// another program that asked for it (a second balancer started by
	// mistake): each would then get part of the connections, silently.
	// A plain bind first fails when anything holds the port.
	if err := claimPort(host, ta); err != nil {
		return nil, "", os.NewSyscallError("listen "+addr, err)
	}
	var sa syscall.Sockaddr
	for i := range n {
		fd, got, err := socketFor(host, ta, true)
		if err != nil {
			return files, "", os.NewSyscallError("listen "+addr, err)
		}
		files = append(files, os.NewFile(uintptr(fd), "lb-listener-"+strconv.Itoa(i)))
		sa = got
	}
	bound = net.JoinHostPort(boundHost(host, sa), strconv.Itoa(ta.Port))
	return files, bound, nil
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

// claimPort checks that nothing is bound to ta's port: it binds a socket
// without SO_REUSEPORT there (for port 0 it picks the port, which it
// stores in ta) and closes it. The listening sockets bind right after.
func claimPort(host string, ta *net.TCPAddr) error {
	fd, _, err := socketFor(host, ta, false)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if ta.Port == 0 {
		got, err := syscall.Getsockname(fd)
		if err != nil {
			return err
		}
		switch a := got.(type) {
		case *syscall.SockaddrInet4:
			ta.Port = a.Port
		case *syscall.SockaddrInet6:
			ta.Port = a.Port
		}
	}
	return nil
}

// socketFor makes a socket bound to ta (SO_REUSEADDR); with reuseport it
// has SO_REUSEPORT and listens, without it is only bound. With no host it
// binds every interface: an IPv6 socket that also takes IPv4 when the
// system allows it (as net.Listen does), else IPv4 only.
func socketFor(host string, ta *net.TCPAddr, reuseport bool) (int, syscall.Sockaddr, error) {
	if host == "" || ta.IP == nil || ta.IP.IsUnspecified() && ta.IP.To4() == nil {
		sa := &syscall.SockaddrInet6{Port: ta.Port}
		if fd, err := bindListen(syscall.AF_INET6, sa, true, reuseport); err == nil {
			return fd, sa, nil
		} else if host != "" {
			return -1, nil, err
		}
		sa4 := &syscall.SockaddrInet4{Port: ta.Port}
		fd, err := bindListen(syscall.AF_INET, sa4, false, reuseport)
		return fd, sa4, err
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &syscall.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		fd, err := bindListen(syscall.AF_INET, sa, false, reuseport)
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
	fd, err := bindListen(syscall.AF_INET6, sa, false, reuseport)
	return fd, sa, err
}

// listenBacklog is the accept queue asked for; the kernel caps it at
// net.core.somaxconn.
const listenBacklog = 4096

// bindListen makes a socket of family bound to sa; with reuseport it has
// SO_REUSEPORT and listens.
func bindListen(family int, sa syscall.Sockaddr, dualStack, reuseport bool) (int, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err == nil && reuseport {
		err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err == nil && dualStack {
		err = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
	}
	if err == nil {
		err = syscall.Bind(fd, sa)
	}
	if err == nil && reuseport {
		err = syscall.Listen(fd, listenBacklog)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// workerSysProcAttr makes a worker get SIGTERM (and drain) if the master
// dies without stopping it, so no worker outlives its master.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
