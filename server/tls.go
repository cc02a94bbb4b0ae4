package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/tlsconn"
)

// notTLSResponse answers plaintext HTTP on a TLS port, as net/http does.
var notTLSResponse = []byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
	"server: plain HTTP request sent to an HTTPS port\n")

// errNoTLS is returned by ReloadTLS on a server without Config.TLS.
var errNoTLS = errors.New("server: TLS is not configured (Config.TLS is nil)")

// initTLS builds the TLS terminator from cfg.TLS and logs, once, whether
// the kernel can take the records over (kernel TLS) or every connection
// stays in crypto/tls.
func (s *Server[H]) initTLS() error {
	if s.cfg.TLS == nil {
		return nil
	}
	ts, err := tlsconn.NewServer(*s.cfg.TLS)
	if err != nil {
		return err
	}
	s.tls = ts
	s.logCertificates("server: TLS certificate loaded")
	return logProbe(s.log, "termination", s.cfg.TLS.Mode)
}

// certExpirySoon is how far ahead a certificate's expiry is warned of.
const certExpirySoon = 14 * 24 * time.Hour

// logCertificates logs each certificate in use: its names and validity,
// at warning level when it has expired, is not valid yet or expires
// within certExpirySoon (clients would refuse it, or soon will).
func (s *Server[H]) logCertificates(msg string) {
	now := time.Now()
	for _, c := range s.tls.Certificates() {
		level, note := slog.LevelInfo, ""
		switch {
		case now.After(c.NotAfter):
			level, note = slog.LevelWarn, "expired: clients will refuse it"
		case now.Before(c.NotBefore):
			level, note = slog.LevelWarn, "not valid yet: clients will refuse it"
		case c.NotAfter.Sub(now) < certExpirySoon:
			level, note = slog.LevelWarn, "expires soon"
		}
		attrs := []slog.Attr{slog.String("file", c.File), slog.String("cn", c.CommonName),
			slog.Any("dns_names", c.DNSNames), slog.Time("not_after", c.NotAfter)}
		if len(c.IPs) > 0 {
			attrs = append(attrs, slog.Any("ip_addresses", c.IPs))
		}
		if note != "" {
			attrs = append(attrs, slog.String("warning", note))
		}
		s.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

// logProbe logs the kernel TLS verdict for a side (termination or
// origination) under mode. ModeRequire without kernel TLS is an error:
// every connection would fail.
func logProbe(log *slog.Logger, side string, mode tlsconn.Mode) error {
	if mode == tlsconn.ModeOff {
		where := "crypto/tls"
		if side == "termination" {
			where = "Serval's record layer after a crypto/tls handshake"
		}
		log.Info("server: kernel TLS off: TLS records in user space ("+where+")", "side", side)
		return nil
	}
	ok, reason := tlsconn.Probe()
	switch {
	case !ok && mode == tlsconn.ModeRequire:
		return errors.New("server: kernel TLS is required (mode require, " + side + ") but this kernel cannot offload it: " + reason)
	case !ok:
		reason += ": TLS stays in user space"
	}
	log.Info(reason, "side", side, "ktls_mode", mode.String())
	return nil
}

// ReloadTLS re-reads the certificate, key and client CA files of
// Config.TLS without a restart (e.g. on SIGHUP): new handshakes use the
// new certificates, established connections keep theirs. A file that
// fails to load is rejected with a logged error and the current
// certificates stay in use. Safe to call at any time, concurrently with
// serving.
func (s *Server[H]) ReloadTLS() error {
	if s.tls == nil {
		return errNoTLS
	}
	if err := s.tls.Reload(); err != nil {
		s.log.Error("server: TLS reload rejected, serving the current certificates", "err", err)
		return err
	}
	s.logCertificates("server: TLS certificate reloaded")
	return nil
}

// TLSStats returns the termination counters: handshakes, failures by
// reason, and connections offloaded to kernel TLS versus kept in user
// space (with the fallback reasons). Zero when Config.TLS is nil.
func (s *Server[H]) TLSStats() tlsconn.Stats {
	if s.tls == nil {
		return tlsconn.Stats{}
	}
	return s.tls.Stats()
}

// UpstreamTLSStats returns the origination counters summed over every
// TLS upstream (see proxy.Forwarder.UpstreamTLSStats).
func (s *Server[H]) UpstreamTLSStats() tlsconn.Stats { return s.fwd.UpstreamTLSStats() }

// PrepareUpstreams builds, at startup, the TLS client of every upstream
// in ups with TLS set (one each: verification roots, SNI, the session
// cache its pooled connections share), logs the InsecureSkipVerify
// warnings and the kernel TLS verdict once, and fails on a bad
// configuration. Upstreams not prepared get their client on first dial.
func (s *Server[H]) PrepareUpstreams(ups []serval.Upstream) error {
	if err := s.fwd.PrepareUpstreams(ups); err != nil {
		return err
	}
	for i := range ups {
		if ups[i].TLS {
			return logProbe(s.log, "origination", s.cfg.Proxy.UpstreamTLS.Mode)
		}
	}
	return nil
}

// handshake runs the TLS handshake on the connection's goroutine, holding
// the slot for at most the handshake timeout. On success conn and tcp are
// replaced (tcp stays the socket only when the kernel took the records
// over, so splice is safe, and is nil otherwise) and the TLS description
// is filled once for every request of the connection.
func (c *slot[H]) handshake() (serval.CloseReason, bool) {
	s := c.srv
	if c.tcp == nil {
		s.log.Error("server: TLS needs a TCP listener; closing the connection", "conn", c.info.ID)
		return serval.CloseTLSHandshake, false
	}
	// The whole handshake, the wait for its first byte included, is
	// bounded by the handshake timeout from here.
	c.hello.deadline = time.Now().Add(s.tls.HandshakeTimeout())
	if reason, ok := c.awaitHello(); !ok {
		return reason, false
	}
	c.state.Store(stHandshake)
	conn, tcp, info, err := s.tls.Handshake(&c.hello, c.tcp)
	if conn != nil {
		c.conn = conn // closed with close_notify from here on
	}
	if !c.state.CompareAndSwap(stHandshake, stBusy) {
		return serval.CloseShutdown, false
	}
	if err != nil {
		if s.log.Enabled(context.Background(), slog.LevelInfo) {
			s.log.LogAttrs(context.Background(), slog.LevelInfo, "server: TLS handshake failed",
				slog.Uint64("conn", c.info.ID), slog.String("client", c.info.ClientAddr.String()),
				slog.Any("err", err))
		}
		c.answerPlaintext(err)
		// The client may have sent more than the handshake read: a TLS
		// 1.3 client its request behind its Finished, a TLS 1.2 one the
		// rest of its flight, a plaintext one its request. The alert (or
		// the 400) must reach it before the close, not be destroyed by
		// the reset those unread bytes would cause: the close is staged
		// (linger.go).
		c.linger = true
		return serval.CloseTLSHandshake, false
	}
	// ALPN dispatch: HTTP/1.1 is served by this slot's loop. "h2" would
	// branch to its own connection loop here once it is advertised.
	switch info.ALPN {
	case "", tlsconn.ALPNHTTP11:
	default:
		s.log.Warn("server: negotiated ALPN protocol not served; closing", "alpn", info.ALPN, "conn", c.info.ID)
		c.linger = true // its first bytes may be here already: close_notify, not a reset
		return serval.CloseTLSHandshake, false
	}
	c.conn, c.tcp = conn, tcp
	if rc, ok := conn.(*tlsconn.RecordConn); ok && c.raw.TCPConn != nil {
		// Serval's records in user space: read the socket the way plain
		// connections are read, waiting for readiness first (see
		// internal/sockio), instead of through the runtime's
		// read-then-wait.
		if c.raw.Poll() == nil && c.raw.Polled() {
			rc.UseTransport(&c.raw)
		}
	}
	c.in.reset(conn)
	c.setTLSInfo(&info)
	return 0, true
}

// awaitHello waits for the first byte of the ClientHello with the slot
// evictable, as awaitFirstByte waits for a head: a connection that never
// speaks must not keep others out for the whole handshake timeout (the
// cheapest slowloris on a TLS port). The wait ends at the handshake's
// deadline at the latest; the handshake then fails at once, counted as a
// timeout. Nothing is read: the handshake reads the bytes.
func (c *slot[H]) awaitHello() (serval.CloseReason, bool) {
	s := c.srv
	if c.raw.TCPConn == nil {
		return 0, true // no raw socket to wait on: the handshake waits
	}
	// The deadline is set before the slot is marked idle, so a claimer's
	// past deadline always lands after it.
	if c.nc.SetReadDeadline(c.hello.deadline) != nil {
		return serval.CloseTLSHandshake, false
	}
	c.idleSince.Store(s.silentSince(serval.Nanotime()))
	c.state.Store(stIdleFresh)
	if s.draining.Load() && s.freshClaimed.Load() {
		// Shutdown may have scanned before we were idle: close ourselves.
		if c.state.CompareAndSwap(stIdleFresh, stBusy) {
			return serval.CloseShutdown, false
		}
		return c.claimedReason(), false
	}
	_ = c.raw.AwaitReadable() // a byte, EOF, an error or the deadline: the handshake tells which
	if !c.state.CompareAndSwap(stIdleFresh, stBusy) {
		return c.claimedReason(), false
	}
	return 0, true
}

// helloCtx is the handshake's context: its deadline, and no Done channel,
// so crypto/tls starts no goroutine to watch it and no timer runs.
type helloCtx struct {
	context.Context
	deadline time.Time
}

func (h *helloCtx) Deadline() (time.Time, bool) { return h.deadline, true }

// answerPlaintext answers 400 when the handshake failed because the
// client spoke plain HTTP, so a misconfigured client learns why. The
// rest of its request is discarded by the staged close that follows
// (close), as after an alert.
func (c *slot[H]) answerPlaintext(err error) {
	var rhe tls.RecordHeaderError
	if !errors.As(err, &rhe) || !looksLikeHTTP(rhe.RecordHeader[:]) {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	c.nc.Write(notTLSResponse)
}

// looksLikeHTTP reports whether a would-be TLS record header is the start
// of an HTTP request line: a letter (no TLS record starts with one: the
// content types are 20-24, an SSLv2 hello has its high bit set) and
// printable ASCII, as "GET /", "GET h" (a proxy's absolute form) or
// "TRACE" are. The handshake has failed already: a false positive only
// sends a plain 400 to a peer that was not speaking TLS.
func looksLikeHTTP(h []byte) bool {
	if len(h) == 0 || !(h[0] >= 'A' && h[0] <= 'Z' || h[0] >= 'a' && h[0] <= 'z') {
		return false
	}
	for _, c := range h {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// setTLSInfo fills the slot's TLS description from the handshake's and
// points the exchange and the connection info at it.
func (c *slot[H]) setTLSInfo(info *tlsconn.ConnInfo) {
	p := &info.Peer
	c.tlsInfo = serval.TLSInfo{
		Version: info.Version, CipherSuite: info.CipherSuite, ServerName: info.ServerName,
		ALPN: info.ALPN, Resumed: info.DidResume, Offloaded: info.Offloaded,
		Records: info.Path == tlsconn.PathRecords,
		Peer: serval.PeerInfo{
			Verified: p.Verified, Subject: p.Subject, CommonName: p.CommonName,
			DNSNames: p.DNSNames, EmailAddresses: p.EmailAddresses, URIs: p.URIs, Leaf: p.Leaf,
		},
	}
	c.x.TLS, c.x.TLSInfo = true, &c.tlsInfo
	c.info.TLS, c.info.TLSInfo = true, &c.tlsInfo
}

// close closes the connection. A TLS connection sends close_notify first
// (bounded by the TLS layer's own write deadline), except after a write
// failure or timeout: a peer that stopped reading gets no alert.
func (c *slot[H]) close(reason serval.CloseReason) {
	tlsConn := c.conn != nil && c.conn != c.nc && c.conn != net.Conn(&c.raw)
	if c.reset && c.tcp != nil {
		// SO_LINGER 0: the close sends a reset, no FIN (and, on TLS, no
		// close_notify, below: it would say the body ended whole).
		c.tcp.SetLinger(0)
	}
	// A TLS connection that failed gets no alert (below), so no staged
	// close either: that starts with close_notify.
	if c.linger && !c.reset && lingers(reason) && !(tlsConn && reason == serval.CloseError) {
		if reason == serval.CloseTLSHandshake {
			// Never past the handshake's deadline: a handshake that
			// timed out does not linger at all.
			end := time.Now().Add(handshakeLingerMax)
			if c.hello.deadline.Before(end) {
				end = c.hello.deadline
			}
			c.lingerClose(end, handshakeLingerBytesMax)
		} else {
			c.lingerClose(time.Now().Add(lingerMax), 0)
		}
	}
	if tlsConn && !c.reset && reason != serval.CloseWriteTimeout && reason != serval.CloseError {
		c.conn.Close()
	}
	// A polled socket leaves the readiness poller through raw, whether
	// raw is the connection itself or the transport of the TLS records
	// (which may have closed it just above: closing again is harmless).
	if c.conn == net.Conn(&c.raw) || c.raw.Polled() {
		c.raw.Close() // leaves the readiness poller, then closes nc
		return
	}
	c.nc.Close()
}
