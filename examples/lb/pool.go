package main

import "github.com/servalproxy/serval"

// newPool returns the upstream connection pool: at most idlePerUpstream
// idle keep-alive connections per upstream.
func newPool(o options, upstreams int) (serval.Pool, error) {
	return nil, nil // TODO(examples): pool.New once pool lands
}
