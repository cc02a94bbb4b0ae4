//go:build linux

package server

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket activation: the listening sockets a service manager opened and
// passed down (systemd's ListenStream=, sd_listen_fds(3)). The manager
// holds them across restarts of the service, so connections that arrive
// while the process restarts wait in the socket's queue for the next one
// instead of being refused.
//
// The protocol: descriptors 3 .. 3+LISTEN_FDS-1 are the sockets, meant
// for the process whose pid is LISTEN_PID (a child that inherited the
// variables must not take them); LISTEN_FDNAMES optionally names them,
// colon-separated. The variables are unset once read, so processes this
// one starts never see them.

// activatedMax bounds LISTEN_FDS: a value past it is a mistake, not a
// table of sockets.
const activatedMax = 1024

var activated struct {
	once  sync.Once
	files []*os.File
	err   error
}

// ActivatedListeners returns the listening sockets the service manager
// passed to this process (systemd socket activation), in order, each
// named "LISTEN_FDNAMES name" or "listen-fd-N"; none when the process was
// not started that way (no LISTEN_PID, or another process's). Every call
// returns the same files: the caller owns them (net.FileListener makes a
// listener of its own from one; close the file after). Each descriptor
// is checked to be a listening stream socket and made close-on-exec; an
// error says which one is not.
func ActivatedListeners() ([]*os.File, error) {
	activated.once.Do(func() {
		activated.files, activated.err = takeActivated(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getpid(), activatedFirst)
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	})
	return activated.files, activated.err
}

// activatedFirst is the first descriptor passed (SD_LISTEN_FDS_START).
const activatedFirst = 3

// takeActivated reads the variables' values for the process pid, whose
// passed descriptors start at first.
func takeActivated(pidVar, fdsVar, namesVar string, pid, first int) ([]*os.File, error) {
	if pidVar == "" || fdsVar == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pidVar); err != nil || p != pid {
		return nil, nil // meant for another process (a parent's, inherited)
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 || n > activatedMax {
		return nil, errors.New("socket activation: LISTEN_FDS=" + strconv.Quote(fdsVar) + " is not a count of descriptors (0-" + strconv.Itoa(activatedMax) + ")")
	}
	var names []string
	if namesVar != "" {
		names = strings.Split(namesVar, ":")
	}
	files := make([]*os.File, 0, n)
	for i := range n {
		fd := first + i
		if err := checkListening(fd); err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, errors.New("socket activation: descriptor " + strconv.Itoa(fd) + " (of LISTEN_FDS=" + strconv.Itoa(n) + "): " + err.Error())
		}
		syscall.CloseOnExec(fd)
		name := "listen-fd-" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, nil
}

// checkListening reports why fd is not a listening TCP (stream) socket.
func checkListening(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		if errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.EBADF) {
			return errors.New("not an open socket")
		}
		return err
	}
	if typ != unix.SOCK_STREAM {
		return errors.New("not a stream socket (ListenStream= makes one)")
	}
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
		return errors.New("a stream socket that is not listening")
	}
	if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom != unix.AF_INET && dom != unix.AF_INET6 {
		return errors.New("not a TCP socket (an address family other than IPv4 or IPv6)")
	}
	return nil
}
