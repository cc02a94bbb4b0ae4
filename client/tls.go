package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/sockio"
	"github.com/servalproxy/serval/tlsconn"
)

// ErrTLSNotConfigured is returned when a TLS upstream is dialled before
// ConfigureTLS; it cannot happen through proxy.New, which always
// configures the dialer.
var ErrTLSNotConfigured = errors.New("client: TLS upstream but the dialer has no TLS configuration")

// tlsClients holds one *tlsconn.Client per upstream index: its session
// cache is shared by that upstream's pooled connections, so a reconnect
// resumes instead of running a full handshake. Entries are built by
// PrepareTLS at startup, or on the first dial of an upstream that was not
// prepared (a table swapped in later); an entry is rebuilt when the
// upstream at its index names another host.
type tlsClients struct {
	configured atomic.Bool
	cfg        tlsconn.ClientConfig
	log        *slog.Logger

	mu      sync.Mutex // serialises builds; lookups are lock-free
	entries [serval.UpstreamsMax]atomic.Pointer[tlsEntry]
}

// tlsEntry is an upstream's client and the names it was built for.
type tlsEntry struct {
	host, serverName string
	c                *tlsconn.Client
}

// ConfigureTLS sets the defaults of every TLS upstream (verification
// roots, minimum version, kernel TLS mode, session cache, ...);
// Upstream.ServerName, when set, overrides cfg.ServerName per upstream.
// Warnings (InsecureSkipVerify) go to log when each upstream's client is
// built. Call it once, before the first dial.
func (d *Dialer) ConfigureTLS(cfg tlsconn.ClientConfig, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	d.tls.cfg, d.tls.log = cfg, log
	d.tls.configured.Store(true)
}

// PrepareTLS builds the TLS client of every upstream in ups with TLS set,
// so that configuration errors (an unreadable CA file) surface at startup
// and InsecureSkipVerify warnings are logged once, there.
func (d *Dialer) PrepareTLS(ups []serval.Upstream) error {
	for i := range ups {
		if ups[i].TLS {
			if _, err := d.tlsClient(&ups[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// TLSStats sums the counters of every upstream's TLS client.
func (d *Dialer) TLSStats() tlsconn.Stats {
	var sum tlsconn.Stats
	for i := range d.tls.entries {
		if e := d.tls.entries[i].Load(); e != nil {
			addStats(&sum, e.c.Stats())
		}
	}
	return sum
}

// tlsClient returns up's client, building it when missing or stale.
func (d *Dialer) tlsClient(up *serval.Upstream) (*tlsconn.Client, error) {
	t := &d.tls
	if !t.configured.Load() {
		return nil, ErrTLSNotConfigured
	}
	if int(up.Index) >= len(t.entries) {
		return nil, fmt.Errorf("client: upstream index %d not below UpstreamsMax", up.Index)
	}
	slot := &t.entries[up.Index]
	if e := slot.Load(); e != nil && e.host == up.Host && e.serverName == up.ServerName {
		return e.c, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := slot.Load(); e != nil && e.host == up.Host && e.serverName == up.ServerName {
		return e.c, nil
	}
	cfg := t.cfg
	if up.ServerName != "" {
		cfg.ServerName = up.ServerName
	}
	c, err := tlsconn.NewClient(cfg, up.Host)
	if err != nil {
		return nil, fmt.Errorf("client: TLS for upstream %s: %w", up.Addr(), err)
	}
	if w := c.Warning(); w != "" {
		t.log.Warn(w, "upstream", up.Addr())
	}
	slot.Store(&tlsEntry{host: up.Host, serverName: up.ServerName, c: c})
	return c, nil
}

// dialTLS connects to up and runs the TLS handshake, both within the
// connect timeout. A timeout is a 504; a refused connection, a failed
// verification or any other handshake failure a 502. Conn is the TLS
// connection; TCP is the raw socket only when the kernel took over the
// records (splice is then safe, see tlsconn.Conn), nil otherwise (the
// proxy copies bodies through its buffers).
func (d *Dialer) dialTLS(up *serval.Upstream) (*serval.UpstreamConn, error) {
	tc, err := d.tlsClient(up)
	if err != nil {
		return nil, &DialError{Status: 502, Err: err}
	}
	// A dial is not the steady state: the context (one allocation and a
	// timer) is acceptable here, and it bounds connect plus handshake.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(d.timeout))
	defer cancel()
	raw, err := d.dialTCP(ctx, up)
	if err != nil {
		return nil, err
	}
	// The handshake and the records in user space read the socket the way
	// plain upstream connections are read, waiting for readiness first
	// (see internal/sockio). Closing the TLS
	// connection closes sc, which leaves the poller.
	var transport net.Conn = raw
	sc := &sockio.Conn{}
	sc.Init()
	if sc.Reset(raw) == nil && sc.Poll() == nil && sc.Polled() {
		transport = sc
	}
	conn, tcp, _, err := tc.HandshakeOver(ctx, raw, transport)
	if err == nil && tcp != nil && transport == net.Conn(sc) {
		sc.Unpoll() // the kernel has the records: they are read from raw
	}
	if err != nil {
		if transport == net.Conn(sc) {
			sc.Close() // leaves the poller, closes raw
		}
		raw.Close()
		status := 502
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			status = 504
		}
		return nil, &DialError{Status: status, Err: fmt.Errorf("TLS handshake with %s: %w", up.Addr(), err)}
	}
	return &serval.UpstreamConn{
		Conn:     conn,
		TCP:      tcp,
		Socket:   raw,
		Upstream: up.Index,
		Peer:     up,
		TLS:      true,
		Created:  time.Now(),
	}, nil
}

// addStats adds b's counters to a.
func addStats(a *tlsconn.Stats, b tlsconn.Stats) {
	a.HandshakesOK += b.HandshakesOK
	a.FailedTimeout += b.FailedTimeout
	a.FailedVersionCipher += b.FailedVersionCipher
	a.FailedBadCert += b.FailedBadCert
	a.FailedClientCert += b.FailedClientCert
	a.FailedNotTLS += b.FailedNotTLS
	a.FailedOther += b.FailedOther
	a.Offloaded += b.Offloaded
	a.Userspace += b.Userspace
	a.FallbackOff += b.FallbackOff
	a.FallbackNoKernel += b.FallbackNoKernel
	a.FallbackCipher += b.FallbackCipher
	a.FallbackNoSecrets += b.FallbackNoSecrets
	a.UserspaceRecords += b.UserspaceRecords
	a.CryptoTLS += b.CryptoTLS
	a.CryptoTLSOff += b.CryptoTLSOff
	a.CryptoTLSCipher += b.CryptoTLSCipher
	a.CryptoTLSNoSecrets += b.CryptoTLSNoSecrets
	a.CryptoTLSClient += b.CryptoTLSClient
}
