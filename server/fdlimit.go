package server

import (
	"errors"
	"log/slog"
	"syscall"
	"time"
)

// File descriptors.
//
// Every busy slot holds a client socket, often an upstream socket, and
// while it splices a pipe (two descriptors, pooled); idle pooled upstream
// connections hold one each. A process whose descriptor limit is below
// that runs into EMFILE under load: the kernel still completes
// connections into the listen backlog, but Accept fails, and those
// clients wait unserved. Go raises the soft limit to the hard one at
// startup (Linux); whatever limit remains is checked once when serving
// starts, and accept failures are logged (at most once per
// acceptLogInterval, with a count), so that the cause is in the log, not
// only in clients' timeouts.

// fdsPerSlot is what one busy slot may hold: client and upstream
// sockets, and a splice pipe.
const fdsPerSlot = 4

// acceptLogInterval bounds how often accept failures are logged.
const acceptLogInterval = 10 * time.Second

// fdsWanted is the descriptor count cfg's slots may need (plus a margin
// for listeners, probes and the runtime).
func fdsWanted(connectionsMax int) uint64 { return uint64(connectionsMax)*fdsPerSlot + 64 }

// checkFileLimit warns when the process's descriptor limit is below what
// connectionsMax slots may need.
func checkFileLimit(connectionsMax int, log *slog.Logger) {
	limit, ok := fileLimit()
	if !ok {
		return
	}
	if want := fdsWanted(connectionsMax); limit < want {
		log.Warn("server: the open file limit is below what the connection slots may need; under load, new connections "+
			"will wait unaccepted (raise it: ulimit -n, systemd LimitNOFILE=; or lower the slots)",
			"limit", limit, "wanted", want, "connections_max", connectionsMax)
	}
}

// acceptErrors rate-limits the log of accept failures.
type acceptErrors struct {
	last       time.Time
	suppressed int
}

// note logs err now, or counts it when one was logged within
// acceptLogInterval.
func (a *acceptErrors) note(err error, log *slog.Logger) {
	now := time.Now()
	if !a.last.IsZero() && now.Sub(a.last) < acceptLogInterval {
		a.suppressed++
		return
	}
	attrs := []any{"err", err, "failures_since_last_log", a.suppressed}
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		attrs = append(attrs, "hint", "out of file descriptors: raise the limit (ulimit -n, systemd LimitNOFILE=) or lower the connection slots")
	}
	log.Warn("server: accept failed; retrying with backoff", attrs...)
	a.last, a.suppressed = now, 0
}
