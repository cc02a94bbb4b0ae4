package server

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/proxy"
	"github.com/servalproxy/serval/tlsconn"
)

// Config configures a Server. DefaultConfig returns a working one;
// Validate rejects zero and unbounded values.
type Config struct {
	// Addr is the listen address for ListenAndServe, e.g. ":8080".
	Addr string

	// ConnectionsMax is the number of connection slots, each with its
	// buffers allocated at startup. A connection beyond it evicts an idle
	// keep-alive connection, or is closed and counted.
	ConnectionsMax int
	// ReadBufferBytes is each slot's read buffer (heads and buffered body
	// bytes). The head stays at its start while its body is read behind it,
	// so it must hold HeadBytesMax plus the longest chunked-body token (a
	// chunk-size line or a trailer line, bounded by TrailerBytesMax).
	// WriteBufferBytes is each slot's response buffer: the head half builds
	// response heads, the tail half is the buf OnRequest receives, and a
	// streamed chunk uses all of it minus the chunk framing. Each slot
	// also has half as much again to gather the direct responses to a
	// batch of pipelined requests into one write.
	ReadBufferBytes  int
	WriteBufferBytes int

	// HeadBytesMax (431), FieldsMax (431) and TargetBytesMax (414) bound a
	// request head.
	HeadBytesMax   int
	FieldsMax      int
	TargetBytesMax int
	// TrailerBytesMax bounds the trailer section of a chunked body.
	TrailerBytesMax int
	// RequestBodyBytesMax bounds a request body (413 above it), whether a
	// handler reads it or it is proxied.
	RequestBodyBytesMax int64
	// BodyDrainBytesMax bounds how much of a request body the handler did
	// not read is drained to keep the connection; beyond it the connection
	// closes.
	BodyDrainBytesMax int64
	// MaxRequestsPerConnection closes a connection after that many
	// requests.
	MaxRequestsPerConnection int
	// StreamChunksMax bounds the chunks of one streamed response.
	StreamChunksMax int

	// HeaderReadTimeout bounds reading a whole request head (slowloris).
	HeaderReadTimeout time.Duration
	// BodyReadTimeout bounds each stall while reading a request body.
	BodyReadTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection.
	IdleTimeout time.Duration
	// WriteTimeout bounds each stall writing a response.
	WriteTimeout time.Duration
	// UnsentBytesMax bounds the response bytes a client socket holds that
	// the kernel has not sent yet (TCP_NOTSENT_LOWAT, Linux; 0 leaves the
	// kernel's default, no bound). A write waiting for room is woken once
	// half of it is sent, so WriteTimeout bounds a stall of the client
	// and not the drain of a send buffer the kernel grew to megabytes
	// (without it, a steady client slower than about 45 KB/s was cut off
	// with the 30 s default). Bytes in flight are not counted: a fast
	// link is not slowed. Default 128 KiB.
	UnsentBytesMax int
	// TCPKeepAlive, when positive, turns TCP keepalive on for every
	// accepted connection, probing after that long idle and that often
	// after. Zero (the default) leaves it off, as nginx and HAProxy do:
	// every state of a connection has its own timeout above, and a
	// listener left at Go's default (which sets keepalive on every
	// accepted socket, four setsockopt calls) is switched off by Serve
	// (see sockio.AcceptKeepAliveOff). An upgraded connection (a
	// WebSocket tunnel, idle up to Proxy.TunnelIdleTimeout) turns
	// keepalive on (15 s) for its client socket when this leaves it off,
	// so that NATs on the way keep it and a vanished client is found.
	// At most TCPKeepAliveMax.
	TCPKeepAlive time.Duration
	// ShutdownTimeout bounds the graceful drain after the context ends.
	ShutdownTimeout time.Duration
	// SlotWaitTimeout bounds how long a new connection that finds every
	// slot busy, and no idle keep-alive connection to evict, waits for
	// one to free (later connections wait in the kernel's listen backlog
	// meanwhile): a burst past ConnectionsMax is served as connections
	// finish instead of refused. A wait that runs out closes that
	// connection (CloseSlotsFull), and until a slot frees again new
	// connections finding none are closed at once, so a server that
	// stays full fails fast. Zero: never wait (close at once, as nginx
	// does past worker_connections).
	SlotWaitTimeout time.Duration

	// TLS, when non-nil, terminates TLS on every accepted connection:
	// certificates (SNI), ALPN, optional mTLS, kernel TLS mode and the
	// handshake timeout (tlsconn.HandshakeTimeoutDefault when 0). The
	// handshake runs on the connection's goroutine and holds its slot,
	// at most HandshakeTimeout. Nil serves plain HTTP.
	TLS *tlsconn.ServerConfig

	// Proxy configures forwarding for requests the handler continues.
	Proxy proxy.Config

	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a configuration that works as is.
func DefaultConfig() Config {
	return Config{
		Addr:                     ":8080",
		ConnectionsMax:           1024,
		ReadBufferBytes:          32 << 10,
		WriteBufferBytes:         16 << 10,
		HeadBytesMax:             serval.HeadBytesMaxDefault,
		FieldsMax:                serval.FieldsMaxDefault,
		TargetBytesMax:           serval.TargetBytesMaxDefault,
		TrailerBytesMax:          serval.TrailerBytesMaxDefault,
		RequestBodyBytesMax:      1 << 30,
		BodyDrainBytesMax:        256 << 10,
		MaxRequestsPerConnection: 100000,
		StreamChunksMax:          serval.StreamChunksMaxDefault,
		HeaderReadTimeout:        serval.HeaderReadTimeoutDefault,
		BodyReadTimeout:          serval.BodyReadTimeoutDefault,
		IdleTimeout:              serval.IdleTimeoutDefault,
		WriteTimeout:             serval.WriteTimeoutDefault,
		UnsentBytesMax:           128 << 10,
		ShutdownTimeout:          serval.ShutdownTimeoutDefault,
		SlotWaitTimeout:          serval.SlotWaitTimeoutDefault,
	}
}

// Validate reports the first zero, negative or out-of-range field.
func (c *Config) Validate() error {
	type bound struct {
		name      string
		v, lo, hi int64
	}
	for _, b := range []bound{
		{"ConnectionsMax", int64(c.ConnectionsMax), 1, 1 << 20},
		{"HeadBytesMax", int64(c.HeadBytesMax), 256, serval.HeadBytesMaxLimit},
		{"ReadBufferBytes", int64(c.ReadBufferBytes), int64(c.ReadBufferBytesMin()), 16 << 20},
		{"WriteBufferBytes", int64(c.WriteBufferBytes), 1 << 10, 16 << 20},
		{"FieldsMax", int64(c.FieldsMax), 1, serval.FieldsMaxLimit},
		{"TargetBytesMax", int64(c.TargetBytesMax), 16, int64(c.HeadBytesMax)},
		{"TrailerBytesMax", int64(c.TrailerBytesMax), 2, serval.HeadBytesMaxLimit},
		{"RequestBodyBytesMax", c.RequestBodyBytesMax, 0, 1 << 62},
		{"BodyDrainBytesMax", c.BodyDrainBytesMax, 0, 1 << 40},
		{"MaxRequestsPerConnection", int64(c.MaxRequestsPerConnection), 1, 1 << 40},
		{"StreamChunksMax", int64(c.StreamChunksMax), 1, 1 << 40},
		{"UnsentBytesMax", int64(c.UnsentBytesMax), 0, 1 << 30},
	} {
		if b.v < b.lo || b.v > b.hi {
			return &serval.ConfigError{Field: "server.Config." + b.name, Msg: strconv.FormatInt(b.v, 10) + " not in [" +
				strconv.FormatInt(b.lo, 10) + ", " + strconv.FormatInt(b.hi, 10) + "]" + zeroHint(b.v == 0)}
		}
	}
	for _, b := range []struct {
		name      string
		v, lo, hi time.Duration
	}{
		{"HeaderReadTimeout", c.HeaderReadTimeout, time.Millisecond, 24 * time.Hour},
		{"BodyReadTimeout", c.BodyReadTimeout, time.Millisecond, 24 * time.Hour},
		{"IdleTimeout", c.IdleTimeout, time.Millisecond, 24 * time.Hour},
		{"WriteTimeout", c.WriteTimeout, time.Millisecond, 24 * time.Hour},
		{"ShutdownTimeout", c.ShutdownTimeout, 0, 24 * time.Hour},
		{"SlotWaitTimeout", c.SlotWaitTimeout, 0, 24 * time.Hour},
		{"TCPKeepAlive", c.TCPKeepAlive, 0, TCPKeepAliveMax},
	} {
		if b.v < b.lo || b.v > b.hi {
			return &serval.ConfigError{Field: "server.Config." + b.name, Msg: b.v.String() + " not in [" + b.lo.String() + ", " + b.hi.String() + "]" + zeroHint(b.v == 0)}
		}
	}
	return nil
}

// TCPKeepAliveMax bounds Config.TCPKeepAlive: Linux refuses a longer
// TCP_KEEPIDLE or TCP_KEEPINTVL (32767 s), and a refused one leaves
// keepalive on at the kernel's defaults (2 h idle, 75 s apart), not off.
const TCPKeepAliveMax = 32767 * time.Second

// ReadBufferBytesMin is the smallest ReadBufferBytes c allows: a head of
// HeadBytesMax with the longest chunk-size line or trailer section
// behind it.
func (c *Config) ReadBufferBytesMin() int { return c.HeadBytesMax + int(bodyTokenBytesMax(c)) }

// chunkLineBytesMax bounds a chunk-size line: the hex digits, the
// extensions and the CRLF, with a little slack for ";" and OWS.
const chunkLineBytesMax = serval.ChunkSizeDigitsMax + serval.ChunkExtensionBytesMax + 8

// bodyTokenBytesMax is the longest token the chunked decoder needs whole
// in the read buffer behind a head: a chunk-size line or a trailer line.
func bodyTokenBytesMax(c *Config) int64 {
	return max(int64(c.TrailerBytesMax), chunkLineBytesMax)
}

// zeroHint is what Validate adds to a field left at zero: a Config built
// from its zero value instead of DefaultConfig.
func zeroHint(zero bool) string {
	if zero {
		return " (zero: start from server.DefaultConfig() and change what you need)"
	}
	return ""
}
