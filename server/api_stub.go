package server

// THIS FILE IS A STUB: the server's public API that examples code against.
// The server implementer replaces it (keep these signatures).

import (
	"context"
	"net"

	"github.com/servalproxy/serval"
)

// Server serves HTTP/1.1 with handler type H, fixed at compile time.
type Server[H serval.Handler] struct{ _ [0]func() }

// New builds a server: it validates cfg and allocates every connection
// slot. pool, m and t may be nil (no pooling, no-op metrics and tracer).
func New[H serval.Handler](h H, pool serval.Pool, m serval.Metrics, t serval.Tracer, cfg Config) (*Server[H], error) {
	panic("server: stub")
}

// Serve accepts connections on ln until ctx is done, then stops accepting,
// lets in-flight requests finish, closes idle connections and returns
// after at most cfg.ShutdownTimeout. It closes ln.
func (s *Server[H]) Serve(ctx context.Context, ln net.Listener) error { panic("server: stub") }

// ListenAndServe listens on cfg.Addr and calls Serve.
func (s *Server[H]) ListenAndServe(ctx context.Context) error { panic("server: stub") }
