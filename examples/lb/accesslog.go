package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/accesslog"
)

// accessFile is the --access-log output: a file opened for appending (so
// that worker processes can share it, each writing whole buffers of whole
// lines), reopened on SIGHUP for log rotation; or stdout ("-").
type accessFile struct {
	path string
	out  io.Writer // stdout for "-"
	mu   sync.Mutex
	f    *os.File
}

func openAccessFile(path string, stdout io.Writer) (*accessFile, error) {
	a := &accessFile{path: path}
	if path == "-" {
		a.out = stdout
		return a, nil
	}
	return a, a.Reopen()
}

// Write writes p (the access log writer's goroutine only).
func (a *accessFile) Write(p []byte) (int, error) {
	if a.out != nil {
		return a.out.Write(p)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Write(p)
}

// Reopen opens the path again (a rotated file is let go); on failure the
// current file stays.
func (a *accessFile) Reopen() error {
	if a.out != nil {
		return nil
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.f
	a.f = f
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (a *accessFile) Close() error {
	if a.f != nil {
		return a.f.Close()
	}
	return nil
}

// startAccessLog opens --access-log and starts its writer; stop flushes
// what is buffered and closes the file. With no --access-log, w is nil.
func startAccessLog(o *options, stdout io.Writer, logger *slog.Logger) (w *accesslog.Writer, file *accessFile, stop func(), err error) {
	if o.accessLog == "" {
		return nil, nil, func() {}, nil
	}
	file, err = openAccessFile(o.accessLog, stdout)
	if err != nil {
		return nil, nil, nil, err
	}
	acfg := accesslog.Config{Out: file, Logger: logger}
	if k := workerIndex(); k >= 0 {
		acfg.Fields = "worker=" + strconv.Itoa(k) // ids count per worker
	}
	w, err = accesslog.New(acfg)
	if err != nil {
		file.Close()
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	return w, file, func() {
		cancel()
		<-done
		file.Close()
	}, nil
}

// logHandler adds OnLog to the balancer's handler: the access log line
// (--access-log) and a debug log line (--debug). Only these flags put it
// in place, so the default path has no OnLog hook at all.
type logHandler struct {
	lbHandler
	access *accesslog.Writer // nil: no access log
	debug  *slog.Logger      // nil: no debug line
}

func (d *logHandler) OnLog(x *serval.Exchange, e *serval.LogEntry) {
	if d.access != nil {
		d.access.Log(x, e)
	}
	if d.debug == nil {
		return
	}
	up := ""
	if e.Upstream != nil {
		up = e.Upstream.Addr()
	}
	attrs := []any{"method", string(e.Method), "path", string(e.Path), "status", e.Status, "upstream", up,
		"reused", e.Reused, "total", e.Timings.Total, "bytes_out", e.BytesOut}
	if e.Err != nil {
		attrs = append(attrs, "phase", e.Phase.String(), "err", e.Err)
	}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	d.debug.Debug("request", attrs...)
}
