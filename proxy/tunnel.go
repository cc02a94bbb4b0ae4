package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
)

// Protocol upgrades (RFC 9110 §7.8): WebSocket and the like.
//
// A request that asks to switch protocols (HTTP/1.1, "Connection:
// upgrade" and an Upgrade field, no body) goes upstream with its Upgrade
// field and "Connection: upgrade"; every other hop-by-hop field is still
// removed. An upstream that declines answers as usual and the exchange
// goes on as any other. One that agrees answers 101 Switching Protocols:
// the 101 goes to the client with the Upgrade field the upstream chose,
// and from then on the two connections are a tunnel. Bytes already read
// past either head (a client that did not wait for the 101, an upstream
// that spoke first) are relayed first.
//
// The tunnel relays each direction on its own goroutine: upstream to
// client on the session's, client to upstream on the body pump's (no
// goroutine per tunnel). A direction that reads EOF half-closes its
// destination and ends; the tunnel ends when both did, when either fails,
// or when no byte went either way for TunnelIdleTimeout. Neither
// connection is reused after: the upstream connection is closed, and the
// client connection closes when Forward returns.
//
// The tunnel's bytes are another protocol's: OnRequestBody and
// OnResponseBody do not see them (a handler that must not let a protocol
// through rejects on Request.Upgrade, or sets UpgradesOff). OnResponse
// sees the 101 and may replace it; the upstream connection is then
// closed and the client's stays HTTP.
//
// An upgraded exchange counts as the upstream's success when its 101
// arrives (health sees it then, not when the tunnel ends); how the tunnel
// ends is the peers' business, not an upstream failure. x.Status is 101,
// x.BytesIn and x.BytesOut count the tunnel's bytes, Timings.Total its
// life.

// upgradable reports whether req's protocol upgrade is proxied. One that
// offers HTTP/2 over cleartext (h2c) is not: RFC 9113 §3.1 removed that
// upgrade, and passing it on would let a client open an HTTP/2 tunnel to
// the upstream past every per-request check of ours ("h2c smuggling").
// The request then goes on as plain HTTP/1.1, its Upgrade field dropped.
func upgradable(req *serval.Request, cfg *Config) bool {
	if !req.Upgrade || cfg.UpgradesOff || req.Version != serval.Version11 || req.Chunked || req.ContentLength > 0 {
		return false
	}
	for i := range req.Fields {
		if !serval.EqualFold(req.Fields[i].Name, "upgrade") {
			continue
		}
		it := http1.NewTokenIter(req.Fields[i].Value)
		for p, ok := it.Next(); ok; p, ok = it.Next() {
			if serval.EqualFold(p, "h2c") {
				return false
			}
		}
	}
	return true
}

// switchOffered reports whether every protocol a 101 switches to (its
// Upgrade field, which must be there) is one req offered: a server must
// not switch to any other (RFC 9110 §7.8), and a proxy must not tunnel
// one it did not agree to pass on.
func switchOffered(req *serval.Request, resp *serval.Response) bool {
	seen := false
	for i := range resp.Fields {
		if !serval.EqualFold(resp.Fields[i].Name, "upgrade") {
			continue
		}
		it := http1.NewTokenIter(resp.Fields[i].Value)
		for p, ok := it.Next(); ok; p, ok = it.Next() {
			if !offered(req, p) {
				return false
			}
			seen = true
		}
	}
	return seen
}

// offered reports whether req's Upgrade fields list protocol p.
func offered(req *serval.Request, p []byte) bool {
	for i := range req.Fields {
		if !serval.EqualFold(req.Fields[i].Name, "upgrade") {
			continue
		}
		it := http1.NewTokenIter(req.Fields[i].Value)
		for q, ok := it.Next(); ok; q, ok = it.Next() {
			if equalFoldBytes(p, q) {
				return true
			}
		}
	}
	return false
}

// tunnelKeepAlive is the TCP keepalive of a tunnel's client socket: Go's
// default period (the upstream's is client.KeepAlivePeriod).
var tunnelKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}

// errTunnelStopped ends a tunnel direction the other one asked to stop.
var errTunnelStopped = errors.New("proxy: tunnel stopped")

// tunnel sends the upstream's 101 to the client and relays both ways
// until the tunnel ends (see above). The head is in s.rbuf.
func (s *Session) tunnel(h client.Head) (serval.Phase, error) {
	resp := &s.resp
	if !switchOffered(s.req, resp) {
		s.releaseUpstream(false)
		return serval.PhaseUpstreamHead, errUpstreamResponse
	}
	b := http1.AppendStatusLine(s.wbuf[:0], resp.Status, resp.Reason)
	b = s.appendResponseFields(b, resp, true)
	for _, f := range resp.Fields {
		if serval.EqualFold(f.Name, "upgrade") {
			b = http1.AppendField(b, f.Name, f.Value)
		}
	}
	b = http1.AppendField(b, nameConn, valueUpgrade)
	b = append(b, "\r\n"...)
	s.wbuf = b[:0]
	s.headSent, s.x.Status, s.keep = true, resp.Status, false
	s.upstreamDone(false, serval.PhaseNone, resp.Status)
	if !s.writeClient(b) || h.End > h.HeadBytes && !s.writeClient(s.rbuf[h.HeadBytes:h.End]) {
		return serval.PhaseClientWrite, errClientWrite
	}
	s.tunnelSeen.Store(serval.Nanotime())
	s.tunnelStop.Store(false)
	if s.d.Socket != nil && !keepAliveOn(s.d.Socket) {
		// A tunnel may sit idle for TunnelIdleTimeout: keepalive probes
		// keep NAT entries on the client's way and find a client gone
		// without a word. (A socket that has keepalive already, as the
		// server's Config.TCPKeepAlive sets it, keeps its own.)
		s.d.Socket.SetKeepAliveConfig(tunnelKeepAlive)
	}
	s.startTunnel()
	// Upstream to client here, until the upstream's EOF (true), a
	// failure, the idle timeout or the pump's stop.
	eof, err := s.relay(s.c.Conn, &s.c.Deadlines, s.rbuf, &s.tunnelStop, s.writeClient)
	if eof && halfClose(s.d.Conn) {
		// The upstream is done sending; the client may still send until
		// it closes (or the idle timeout).
		<-s.pumpDone
		s.collectPump()
	} else {
		s.stopPump()
	}
	// Either direction's read found the tunnel idle (relay): the one
	// that did ended the other (its stop, or the upstream's EOF).
	s.tunnelIdle = idleEnd(err) || s.pj.phase == serval.PhaseClientBody && idleEnd(s.pj.err)
	s.d.Deadlines.Forget()
	s.c.Deadlines.Forget()
	s.releaseUpstream(false)
	return serval.PhaseNone, nil
}

// relay copies src to write, one direction of a tunnel, until src's EOF
// (eof true), a failed write (write reports it), the stop flag, or the
// tunnel's idle timeout; err is what ended the reading.
func (s *Session) relay(src net.Conn, dl *serval.Deadlines, buf []byte, stop *atomic.Bool, write func([]byte) bool) (eof bool, err error) {
	idle := s.f.cfg.TunnelIdleTimeout
	for {
		// The stop flag is read after the deadline is renewed: a stop
		// whose past deadline the renewal overwrote is seen here.
		if dl.Read(src, idle) != nil || stop.Load() {
			return false, errTunnelStopped
		}
		n, err := src.Read(buf)
		if n > 0 {
			s.tunnelSeen.Store(serval.Nanotime())
			if !write(buf[:n]) {
				return false, nil
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			return true, nil
		case stop.Load():
			return false, errTunnelStopped // not idle: the other direction ended
		case !s.tunnelActive(err):
			return false, err
		}
	}
}

// idleEnd reports whether relay's err says the tunnel was idle: its read
// deadline passed with no byte either way (tunnelActive was false).
func idleEnd(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// tunnelActive reports whether err is a read timeout while the other
// direction moved bytes within TunnelIdleTimeout (the tunnel is not idle:
// read on).
func (s *Session) tunnelActive(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) &&
		serval.Nanotime()-s.tunnelSeen.Load() < int64(s.f.cfg.TunnelIdleTimeout)
}

// startTunnel hands the client-to-upstream direction to the pump.
func (s *Session) startTunnel() {
	d := s.d
	s.ensurePump()
	j := &s.pj
	j.d, j.up, j.upTCP, j.upDL, j.chunked, j.tunnel = d, s.c.Conn, s.c.TCP, &s.c.Deadlines, false, true
	j.remaining = 0
	j.done, j.clientSide, j.phase, j.err, j.head, j.end, j.bytesIn = false, false, 0, nil, d.Head, d.End, 0
	s.pumpStop.Store(false)
	s.pumping = true
	s.pumpGo <- struct{}{}
}

// pumpTunnel relays client bytes upstream (bytes read past the request
// head first) until the client's EOF, which half-closes the upstream.
// Any other end (a failure, the idle timeout, the session's stop) also
// stops the session's direction.
func (s *Session) pumpTunnel(j *pumpJob) {
	d := j.d
	if b := d.Buf[d.Head:d.End]; len(b) > 0 {
		if !s.tunnelWrite(j, b) {
			s.stopDown()
			return
		}
	}
	j.head, j.end = d.End, d.End
	eof, err := s.relay(d.Conn, d.Deadlines, s.pbuf, &s.pumpStop, func(b []byte) bool { return s.tunnelWrite(j, b) })
	switch {
	case eof:
		j.done = true
		if halfClose(j.up) {
			return
		}
	case err != nil:
		j.fail(true, serval.PhaseClientBody, err)
	}
	s.stopDown()
}

// tunnelWrite writes b upstream under a fresh write deadline.
func (s *Session) tunnelWrite(j *pumpJob, b []byte) bool {
	j.bytesIn += int64(len(b))
	if err := j.upDL.Write(j.up, s.f.cfg.WriteTimeout); err != nil {
		j.fail(false, serval.PhaseUpstreamWrite, err)
		return false
	}
	if _, err := j.up.Write(b); err != nil {
		j.fail(false, serval.PhaseUpstreamWrite, err)
		return false
	}
	return true
}

// stopDown makes the session's direction end: the flag first, then a past
// read deadline on the upstream (see relay).
func (s *Session) stopDown() {
	s.tunnelStop.Store(true)
	s.pj.up.SetReadDeadline(pastDeadline)
}

// halfClose shuts c's sending side (FIN, after close_notify on TLS); false
// when c cannot.
func halfClose(c net.Conn) bool {
	cw, ok := c.(interface{ CloseWrite() error })
	return ok && cw.CloseWrite() == nil
}
