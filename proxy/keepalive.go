package proxy

import (
	"time"

	"github.com/servalproxy/serval"
)

// keepAliveTimeoutMax bounds the Keep-Alive timeout we parse (seconds).
const keepAliveTimeoutMax = 1 << 20

// keepAliveIdle returns how long a connection may stay idle in the pool
// for an upstream that sent "Keep-Alive: v" (RFC 2068 §19.7.1, still sent
// by Node.js, Apache and others): its timeout less a margin, so that the
// pool lets the connection go before the upstream closes it and a request
// sent meanwhile does not race the close; 0 when v says nothing usable.
// The margin is a second (half of a one-second timeout): the upstream
// counts from its last byte sent, we from the response's end here.
func keepAliveIdle(v []byte) time.Duration {
	const key = "timeout="
	for i := 0; i+len(key) <= len(v); i++ {
		if (i > 0 && v[i-1] != ' ' && v[i-1] != ',' && v[i-1] != '\t') || !serval.EqualFold(v[i:i+len(key)], key) {
			continue
		}
		n, digits := 0, 0
		for _, c := range v[i+len(key):] {
			if c < '0' || c > '9' {
				break
			}
			if n < keepAliveTimeoutMax {
				n = n*10 + int(c-'0')
			}
			digits++
		}
		switch {
		case digits == 0 || n == 0:
			return 0
		case n == 1:
			return 500 * time.Millisecond
		}
		return time.Duration(min(n, keepAliveTimeoutMax)-1) * time.Second
	}
	return 0
}
