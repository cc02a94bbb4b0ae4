package main

import "github.com/servalproxy/serval/pool"

// newPool returns the upstream connection pool: at most
// o.idlePerUpstream idle keep-alive connections per upstream, at most
// o.backendMaxConns connections in all per upstream (0: no cap), idle for
// at most o.upstreamIdle, and the pool's default maximum age. The caller
// Closes it (that stops its reaper goroutine).
func newPool(o options, upstreams int) (*pool.Fixed, error) {
	cfg := pool.DefaultConfig(upstreams)
	cfg.IdlePerUpstream = o.idlePerUpstream
	if o.upstreamIdle > 0 {
		cfg.IdleTimeout = o.upstreamIdle
	}
	if o.backendMaxConns > 0 {
		cfg.ConnsPerUpstreamMax = o.backendMaxConns
		cfg.IdlePerUpstream = min(cfg.IdlePerUpstream, o.backendMaxConns)
	}
	return pool.New(cfg)
}
