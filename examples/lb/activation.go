package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/servalproxy/serval/server"
)

// Socket activation (systemd): a unit's .socket (ListenStream=8080) opens
// the listening socket and passes it down (server.ActivatedListeners).
// The service manager keeps it open while the balancer restarts, so
// connections made between the old process's exit and the new one's
// start wait in its queue instead of being refused: a restart (new
// backends, a new binary) loses no connection attempt.

// takeActivated sets o.activated to the socket the service manager
// passed, if it passed one. It refuses more than one (the balancer
// serves one port) and a socket on another address than --host/--port
// when they were given (a unit and flags that disagree).
func takeActivated(o *options, logger *slog.Logger) error {
	if pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"); fds != "" && pid != strconv.Itoa(os.Getpid()) {
		// Passed to another process: a wrapper's (go run builds the
		// program and starts it as a child). Not taken, as
		// sd_listen_fds(3) says; the listen that follows then likely
		// finds the port taken by the service manager.
		logger.Warn("socket activation: the sockets were passed to another process (LISTEN_PID is not this one's), so they are not used; "+
			"run the built binary itself, not through go run or a wrapper that forks", "listen_pid", pid, "pid", os.Getpid())
	}
	files, err := server.ActivatedListeners()
	if err != nil {
		return err
	}
	return useActivated(o, files)
}

// useActivated is takeActivated with the passed sockets.
func useActivated(o *options, files []*os.File) error {
	switch len(files) {
	case 0:
		return nil
	case 1:
	default:
		for _, f := range files {
			f.Close()
		}
		return errors.New("socket activation: the service manager passed " + strconv.Itoa(len(files)) +
			" listening sockets; the balancer serves one (one ListenStream= in the .socket unit)")
	}
	f := files[0]
	addr, err := checkActivatedAddr(o, f)
	if err != nil {
		f.Close()
		return err
	}
	o.activated, o.activatedAddr = f, addr
	return nil
}

// checkActivatedAddr returns the address the passed socket listens on,
// and refuses it when that is not where --host and --port (when given)
// say.
func checkActivatedAddr(o *options, f *os.File) (string, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return "", errors.New("socket activation: " + err.Error())
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close() // f keeps the socket
	if o.portSet && o.port != 0 && o.port != addr.Port {
		return "", errors.New("socket activation: the passed socket listens on " + addr.String() +
			", not on --port " + strconv.Itoa(o.port) + " (leave --port out, or make them agree)")
	}
	if ip := net.ParseIP(o.host); o.hostSet && ip != nil && !ip.Equal(addr.IP) && !(ip.IsUnspecified() && addr.IP.IsUnspecified()) {
		return "", errors.New("socket activation: the passed socket listens on " + addr.String() +
			", not on --host " + o.host + " (leave --host out, or make them agree)")
	}
	return addr.String(), nil
}

// activatedListener makes the serving listener of the passed socket.
func activatedListener(f *os.File) (net.Listener, error) {
	defer f.Close() // FileListener holds its own descriptor
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, errors.New("socket activation: " + err.Error())
	}
	return ln, nil
}
