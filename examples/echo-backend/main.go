// Command echo-backend is a small HTTP/1.1 origin built on Serval's server:
// it answers every request with a readable dump of what it received
// (method, path, version, every header, the body), or with the request
// body itself (--echo-body), for integrity and load tests.
//
//	go run ./examples/echo-backend --port 8001 --id backend-1
//	curl localhost:8001/test
//	go run ./examples/echo-backend --port 8443 --cert cert.pem --key key.pem   # HTTPS
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/servalproxy/serval/examples/echo-backend/echo"
	"github.com/servalproxy/serval/examples/internal/cli"
	"github.com/servalproxy/serval/server"
	"github.com/servalproxy/serval/tlsconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE) // a gone stdout reader fails log lines, not the process
	os.Exit(run(ctx, os.Args[1:], os.Stderr, nil))
}

// run parses args, serves until ctx is done and returns the exit code.
// When ready is non-nil the listener's address is sent on it once serving.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) int {
	fs := flag.NewFlagSet("echo-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "listening address (default: all interfaces)")
	port := fs.Int("port", 8001, "listening port (0 picks a free one)")
	id := fs.String("id", "echo-1", "instance identifier, shown in the dump and sent as X-Backend-Id")
	chunked := fs.Bool("chunked", false, "answer with Transfer-Encoding: chunked")
	echoBody := fs.Bool("echo-body", false, "answer with exactly the request body (streamed, any size)")
	maxConns := fs.Int("max-conns", server.DefaultConfig().ConnectionsMax, "client connection slots (buffers for each are allocated at startup)")
	debug := fs.Bool("debug", false, "debug logging (one line per request)")
	certFile := fs.String("cert", "", "PEM certificate chain: serve HTTPS (needs --key)")
	keyFile := fs.String("key", "", "PEM private key of --cert")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: echo-backend [flags]\n\nAn HTTP/1.1 echo origin built on Serval's server.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	msg := cli.CheckCommon(fs, *port, *maxConns)
	if msg == "" && (*certFile == "") != (*keyFile == "") {
		msg = "--cert and --key go together"
	}
	if msg != "" {
		fmt.Fprintln(stderr, "echo-backend: "+msg)
		fs.Usage()
		return 2
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ln, err := server.Listen(ctx, net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		logger.Error("listen", "err", err)
		return 1
	}
	actual := ln.Addr().(*net.TCPAddr).Port
	h := echo.New(echo.Config{ID: *id, Port: actual, Chunked: *chunked, EchoBody: *echoBody, Logger: logger})

	cfg := server.DefaultConfig()
	cfg.Addr = ln.Addr().String()
	cfg.ConnectionsMax = *maxConns
	cfg.Logger = logger
	if *certFile != "" {
		// The server logs the kernel TLS verdict (offload or user space).
		cfg.TLS = &tlsconn.ServerConfig{CertFile: *certFile, KeyFile: *keyFile}
	}
	srv, err := server.New(h, nil, nil, nil, cfg)
	if err != nil {
		ln.Close()
		logger.Error("server config", "err", err)
		return 1
	}
	logger.Info("echo backend listening", "id", *id, "addr", ln.Addr().String(), "chunked", *chunked, "echo_body", *echoBody, "https", cfg.TLS != nil)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("serve", "err", err)
		return 1
	}
	logger.Info("echo backend stopped", "id", *id)
	return 0
}
