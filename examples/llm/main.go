// Command llm is a Server-Sent Events streaming server in the style of an
// LLM chat API, built on Serval's Stream action: the server sends the head,
// then pulls the body from the handler's NextChunk, one token at a time,
// chunked-framed and flushed as it goes.
//
//	go run ./examples/llm
//	curl -N -X POST localhost:8080/v1/chat/completions
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
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/examples/internal/cli"
	"github.com/servalproxy/serval/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE) // a gone stdout reader fails log lines, not the process
	os.Exit(run(ctx, os.Args[1:], os.Stderr, nil))
}

// tokens is the canned answer, streamed one token per event.
var tokens = []string{
	"Hello", "!", " I", " am", " a", " streaming", " response", " from", " Serval", ".",
	" Each", " token", " is", " one", " Server-Sent", " Event", ",", " sent", " as", " soon",
	" as", " it", " is", " ready", ".",
}

var (
	bodyOK       = []byte("OK")
	bodyNotFound = []byte("not found\n")
	noCache      = []serval.Header{{Name: []byte("Cache-Control"), Value: []byte("no-cache")}}
)

// Handler answers every request itself; it never forwards.
type Handler struct {
	// Delay is the pause before each token after the first (and before
	// the final [DONE] event).
	Delay time.Duration
	Log   *slog.Logger
}

// SelectUpstream is never reached: OnRequest answers every request.
func (h *Handler) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

// OnRequest routes: POST /v1/chat/completions streams, GET /health is 200.
func (h *Handler) OnRequest(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	switch string(req.Path) { // string(b) in a switch does not allocate
	case "/v1/chat/completions":
		if req.MethodID != serval.MethodPost {
			a := serval.Reject(405, "use POST")
			a.Headers = allowPost
			return a
		}
		h.Log.Debug("stream start", "client", x.ClientAddr)
		// x.User carries the index of the next token; the server clears it
		// for every request.
		x.User = 0
		a := serval.Stream(200, "text/event-stream")
		a.Headers = noCache
		return a
	case "/health":
		return serval.Respond(200, "text/plain", bodyOK)
	}
	return serval.Respond(404, "text/plain", bodyNotFound)
}

var allowPost = []serval.Header{{Name: []byte("Allow"), Value: []byte("POST")}}

// NextChunk writes the next event into buf: "data: <token>\n\n", then
// "data: [DONE]\n\n" with done=true. It sleeps Delay between events; hooks
// of one connection run on that connection's goroutine, so the sleep holds
// only this stream.
func (h *Handler) NextChunk(x *serval.Exchange, buf []byte) (int, bool, error) {
	i, _ := x.User.(int)
	if i > 0 {
		time.Sleep(h.Delay)
	}
	if i >= len(tokens) {
		n := copy(buf, "data: [DONE]\n\n")
		return n, true, nil
	}
	out := append(buf[:0], "data: "...)
	out = append(out, tokens[i]...)
	out = append(out, "\n\n"...)
	if len(out) > len(buf) {
		return 0, false, errors.New("llm: chunk buffer too small")
	}
	x.User = i + 1
	return len(out), false, nil
}

// run parses args, serves until ctx is done and returns the exit code.
// When ready is non-nil the listener's address is sent on it once serving.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) int {
	fs := flag.NewFlagSet("llm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "listening address (default: all interfaces)")
	port := fs.Int("port", 8080, "listening port (0 picks a free one)")
	delay := fs.Duration("delay", 50*time.Millisecond, "pause between streamed tokens")
	maxConns := fs.Int("max-conns", server.DefaultConfig().ConnectionsMax, "client connection slots (buffers for each are allocated at startup)")
	debug := fs.Bool("debug", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: llm [flags]\n\nAn SSE streaming server (POST /v1/chat/completions, GET /health) on Serval.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	msg := cli.CheckCommon(fs, *port, *maxConns)
	if msg == "" && *delay < 0 {
		msg = "--delay must not be negative"
	}
	if msg != "" {
		fmt.Fprintln(stderr, "llm: "+msg)
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
	cfg := server.DefaultConfig()
	cfg.Addr = ln.Addr().String()
	cfg.ConnectionsMax = *maxConns
	cfg.Logger = logger
	srv, err := server.New(&Handler{Delay: *delay, Log: logger}, nil, nil, nil, cfg)
	if err != nil {
		ln.Close()
		logger.Error("server config", "err", err)
		return 1
	}
	logger.Info("llm streaming server listening", "addr", ln.Addr().String(), "delay", *delay)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("serve", "err", err)
		return 1
	}
	logger.Info("llm streaming server stopped")
	return 0
}
