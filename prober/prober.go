package prober

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Stats are one upstream's probe counters (monotonic, for metrics).
type Stats struct {
	Probes   uint64 // probes completed
	Failures uint64 // probes that failed
	Ups      uint64 // unhealthy -> healthy flips caused by a probe
	Downs    uint64 // healthy -> unhealthy flips caused by a probe
}

type counters struct {
	probes, failures, ups, downs atomic.Uint64
	_                            [32]byte // one cache line per upstream
}

// Prober probes a table of upstreams. Build with New, run with Start,
// stop with Close.
type Prober struct {
	cfg     Config
	stats   [serval.UpstreamsMax]counters
	mu      sync.Mutex // guards cancel and started
	cancel  context.CancelFunc
	started bool
	wg      sync.WaitGroup
}

// ErrStarted is returned by Start on a prober already started.
var ErrStarted = errors.New("prober: already started")

// New validates cfg and returns a stopped prober.
func New(cfg Config) (*Prober, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Prober{cfg: c}, nil
}

// Start launches one probing goroutine per upstream. They stop when ctx
// is cancelled or Close is called. A prober starts once.
func (p *Prober) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return ErrStarted
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	for i := range p.cfg.Upstreams {
		p.wg.Add(1)
		go p.run(ctx, serval.UpstreamIndex(i))
	}
	return nil
}

// Close stops every probe (an in-flight one is aborted) and waits for
// the goroutines to exit. It is safe to call more than once, and before
// Start.
func (p *Prober) Close() error {
	p.mu.Lock()
	p.started = true // a Close before Start keeps Start from running
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// Stats returns upstream i's counters.
func (p *Prober) Stats(i serval.UpstreamIndex) Stats {
	if int(i) >= len(p.cfg.Upstreams) {
		return Stats{}
	}
	c := &p.stats[i]
	return Stats{Probes: c.probes.Load(), Failures: c.failures.Load(), Ups: c.ups.Load(), Downs: c.downs.Load()}
}

// run probes upstream i until ctx is done.
func (p *Prober) run(ctx context.Context, i serval.UpstreamIndex) {
	defer p.wg.Done()
	w := newWorker(&p.cfg, &p.cfg.Upstreams[i])
	t := time.NewTimer(p.jitter(0))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status, err := w.probe(ctx)
		if ctx.Err() != nil {
			return // aborted by Close: not the upstream's fault
		}
		if status != 0 {
			// A head came: its version tells a proxy, before any request
			// went there, whether the upstream takes a chunked body (an
			// HTTP/1.0 one takes it as empty, RFC 9112 §6.1).
			w.u.NoteVersion(w.resp.Version)
		}
		if serval.LocalResourceError(err) {
			// The probe could not even start here (no descriptor for
			// its socket): no verdict on the upstream, whose state
			// stays as it was. Logged once per run of such probes.
			if !w.local {
				p.cfg.Logger.Warn("prober: probe not made: this process is out of resources; health unchanged",
					"upstream", w.u.Addr(), "index", i, "err", err)
			}
			w.local = true
		} else {
			w.local = false
			p.record(i, status, err)
		}
		t.Reset(p.jitter(p.cfg.Interval))
	}
}

// jitter returns base ± up to Jitter (never negative).
func (p *Prober) jitter(base time.Duration) time.Duration {
	j := p.cfg.Jitter
	if j <= 0 {
		return base
	}
	d := base + time.Duration(rand.Int64N(int64(2*j+1))) - j
	return max(d, 0)
}

// record feeds one outcome to the health state and logs a flip once.
func (p *Prober) record(i serval.UpstreamIndex, status int, err error) {
	c := &p.stats[i]
	c.probes.Add(1)
	u := &p.cfg.Upstreams[i]
	if err == nil {
		if p.cfg.Health.RecordProbeSuccess(i) {
			c.ups.Add(1)
			p.cfg.Logger.Info("prober: upstream healthy", "upstream", u.Addr(), "index", i, "status", status)
		}
		return
	}
	c.failures.Add(1)
	if p.cfg.Health.RecordProbeFailure(i) {
		c.downs.Add(1)
		p.cfg.Logger.Warn("prober: upstream unhealthy", "upstream", u.Addr(), "index", i, "status", status, "err", err)
	}
}

// Probe runs one probe of upstream i now and returns the status (0 when
// none arrived) and nil when it passed. It records nothing: for startup
// checks and tests.
func (p *Prober) Probe(ctx context.Context, i serval.UpstreamIndex) (int, error) {
	if int(i) >= len(p.cfg.Upstreams) {
		return 0, ErrIndex
	}
	return newWorker(&p.cfg, &p.cfg.Upstreams[i]).probe(ctx)
}

// worker holds one upstream's probe buffers, allocated once.
type worker struct {
	cfg  *Config
	u    *serval.Upstream
	req  []byte
	buf  []byte
	resp serval.Response
	// local: the last probe failed for want of a local resource
	// (serval.LocalResourceError) and was not recorded.
	local bool
}

func newWorker(cfg *Config, u *serval.Upstream) *worker {
	host := cfg.Host
	if host == "" {
		host = u.Addr()
	}
	fields := []serval.Header{
		{Name: []byte("Host"), Value: []byte(host)},
		{Name: []byte("User-Agent"), Value: []byte("serval-prober")},
		{Name: []byte("Accept"), Value: []byte("*/*")},
		{Name: []byte("Connection"), Value: []byte("close")},
	}
	w := &worker{cfg: cfg, u: u}
	w.req = http1.AppendRequestHead(nil, []byte("GET"), []byte(cfg.Path), fields)
	size := serval.HeadBytesMaxDefault
	if cfg.BodyContains != "" {
		size += BodyBytesMax
	}
	w.buf = make([]byte, size)
	w.resp.Init(fieldsMax)
	return w
}
