package prober

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/servalproxy/serval"
)

// Limits and defaults. HAProxy checks every 2 s, Envoy has no default;
// 5 s with a 2 s timeout finds a dead upstream within three probes
// (~15 s) while costing each upstream one request per 5 s per proxy.
const (
	IntervalDefault = 5 * time.Second
	// IntervalMin keeps a misconfiguration from turning probes into
	// load (64 upstreams at 10 ms is 6400 requests per second).
	IntervalMin    = 10 * time.Millisecond
	IntervalMax    = 10 * time.Minute
	TimeoutDefault = 2 * time.Second
	TimeoutMin     = time.Millisecond
	// BodyBytesMax bounds the body read for the substring check: a
	// health page is small, and a probe must not download an upstream's
	// whole response.
	BodyBytesMax = 64 << 10
	// PathBytesMax and HostBytesMax bound the probe's request head.
	PathBytesMax = 1 << 10
	HostBytesMax = 255
	// fieldsMax bounds the response fields a probe parses.
	fieldsMax = 64
)

// Recorder receives probe outcomes; *health.State implements it (it
// counts probes apart from traffic). Both methods report whether the
// outcome flipped the upstream's state.
type Recorder interface {
	RecordProbeSuccess(i serval.UpstreamIndex) bool
	RecordProbeFailure(i serval.UpstreamIndex) bool
}

// DialFunc opens a connection to an upstream. It must honour ctx's
// deadline (the probe's timeout). TLS origination wraps the connection
// here.
type DialFunc func(ctx context.Context, u *serval.Upstream) (net.Conn, error)

// Config configures a Prober. Zero fields take their defaults.
type Config struct {
	// Upstreams is the table to probe (kept, not copied).
	Upstreams []serval.Upstream
	// Health records outcomes (required): the same state selection
	// reads, e.g. lb.Handler.Health().
	Health Recorder
	// Path is the request target. Default "/".
	Path string
	// Host is the Host field. Default: each upstream's "host:port".
	Host string
	// Interval is the wait between the end of one probe of an upstream
	// and the start of the next (so probes of one upstream never
	// overlap). Default IntervalDefault.
	Interval time.Duration
	// Jitter spreads probes: each wait is Interval ± up to Jitter, and
	// the first probe comes after up to Jitter, so upstreams (and
	// proxies) do not probe in lockstep. Default Interval/10; at most
	// Interval/2.
	Jitter time.Duration
	// Timeout bounds one probe: dial, write and read under one deadline.
	// Default TimeoutDefault, capped at Interval.
	Timeout time.Duration
	// StatusMin and StatusMax are the statuses counted healthy. Default
	// 200 and 399.
	StatusMin, StatusMax int
	// BodyContains, when set, must appear in the first BodyBytesMax
	// bytes of the (de-chunked) body.
	BodyContains string
	// Dial opens connections. Default: plain TCP. Required for upstreams
	// with TLS set.
	Dial DialFunc
	// Logger logs transitions. Default slog.Default().
	Logger *slog.Logger
}

// Configuration errors.
var (
	ErrNoUpstreams = errors.New("prober: no upstreams")
	ErrTooMany     = errors.New("prober: more than " + strconv.Itoa(serval.UpstreamsMax) + " upstreams (serval.UpstreamsMax)")
	ErrIndex       = errors.New("prober: table[i].Index != i")
	ErrNoHealth    = errors.New("prober: nil Health")
	ErrPath        = errors.New("prober: path must start with / and hold visible ASCII only")
	ErrHost        = errors.New("prober: host must be visible ASCII, at most prober.HostBytesMax bytes")
	ErrInterval    = errors.New("prober: interval outside [" + IntervalMin.String() + ", " + IntervalMax.String() + "]")
	ErrJitter      = errors.New("prober: jitter outside [0, interval/2]")
	ErrTimeout     = errors.New("prober: timeout outside [prober.TimeoutMin, interval]")
	ErrStatusRange = errors.New("prober: status range outside [100, 599] or empty")
	ErrBodyLen     = errors.New("prober: BodyContains longer than prober.BodyBytesMax")
	ErrTLSDial     = errors.New("prober: TLS upstream needs Config.Dial")
)

// withDefaults fills zero fields and validates the rest.
func (c Config) withDefaults() (Config, error) {
	if len(c.Upstreams) == 0 {
		return c, ErrNoUpstreams
	}
	if len(c.Upstreams) > serval.UpstreamsMax {
		return c, ErrTooMany
	}
	if c.Health == nil {
		return c, ErrNoHealth
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if !ValidPath(c.Path) {
		return c, ErrPath
	}
	if len(c.Host) > HostBytesMax || !visible(c.Host) {
		return c, ErrHost
	}
	if c.Interval == 0 {
		c.Interval = IntervalDefault
	}
	if c.Interval < IntervalMin || c.Interval > IntervalMax {
		return c, ErrInterval
	}
	if c.Jitter == 0 {
		c.Jitter = c.Interval / 10
	}
	if c.Jitter < 0 || c.Jitter > c.Interval/2 {
		return c, ErrJitter
	}
	if c.Timeout == 0 {
		c.Timeout = min(TimeoutDefault, c.Interval)
	}
	if c.Timeout < TimeoutMin || c.Timeout > c.Interval {
		return c, ErrTimeout
	}
	return c.checkRest()
}

func (c Config) checkRest() (Config, error) {
	if c.StatusMin == 0 && c.StatusMax == 0 {
		c.StatusMin, c.StatusMax = 200, 399
	}
	if c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax {
		return c, ErrStatusRange
	}
	if len(c.BodyContains) > BodyBytesMax {
		return c, ErrBodyLen
	}
	for i := range c.Upstreams {
		if int(c.Upstreams[i].Index) != i {
			return c, ErrIndex
		}
		if c.Upstreams[i].TLS && c.Dial == nil {
			return c, ErrTLSDial
		}
	}
	if c.Dial == nil {
		c.Dial = dialTCP
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// ValidPath reports whether p is a probe path Config accepts: it starts
// with '/', holds visible ASCII only and is at most PathBytesMax bytes.
func ValidPath(p string) bool {
	return len(p) > 0 && p[0] == '/' && len(p) <= PathBytesMax && visible(p)
}

// visible reports whether s is visible ASCII (no space, CTL or non-ASCII
// byte that could split or smuggle a request head).
func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func dialTCP(ctx context.Context, u *serval.Upstream) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", u.Addr())
}
