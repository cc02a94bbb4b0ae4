package tlsconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// endpoint is what Server and Client share for running a handshake.
type endpoint struct {
	server  bool
	mode    Mode
	timeout time.Duration
	ctr     *counters
	// cryptoTLS is why this endpoint keeps every connection that is not
	// offloaded on crypto/tls; CryptoTLSNone: use a RecordConn when the
	// cipher and the captured keys allow.
	cryptoTLS CryptoTLSReason
}

// wantsHandshakeConn reports whether a handshake needs the capturing
// handshakeConn: for kernel TLS or for a RecordConn afterwards.
func (e *endpoint) wantsHandshakeConn() bool {
	return e.mode != ModeOff && kernelTLSBuilt || e.cryptoTLS == CryptoTLSNone
}

// run completes the handshake on tc (built over tr, raw or a wrapper of
// it, through hc when hc is not nil), then offloads raw, moves to a
// RecordConn, or stays on tc. On error the caller closes raw.
func (e *endpoint) run(ctx context.Context, raw *net.TCPConn, tr net.Conn, tc *tls.Conn, hc *handshakeConn) (net.Conn, *net.TCPConn, ConnInfo, error) {
	deadline := time.Now().Add(e.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// Deadlines go on tr, the conn the handshake reads through (raw, or
	// a wrapper of it whose reads wait on deadlines of their own).
	if err := tr.SetDeadline(deadline); err != nil {
		e.ctr.other.Add(1)
		return nil, nil, ConnInfo{}, fmt.Errorf("tlsconn: handshake: %w", err)
	}
	// HandshakeContext watches ctx only if it can be cancelled; the
	// deadline above bounds the handshake either way.
	if err := tc.HandshakeContext(ctx); err != nil {
		e.ctr.countFailure(err, e.server)
		return nil, nil, ConnInfo{}, fmt.Errorf("tlsconn: handshake: %w", err)
	}
	if err := tr.SetDeadline(time.Time{}); err != nil {
		e.ctr.other.Add(1)
		return nil, nil, ConnInfo{}, fmt.Errorf("tlsconn: handshake: %w", err)
	}
	if hc != nil {
		defer hc.wipe()
	}
	cs := tc.ConnectionState()
	info := newConnInfo(&cs)
	kc, fb, err := e.tryOffload(raw, hc, &cs)
	info.Fallback = fb
	if err != nil { // the kernel holds half the state: unusable
		e.ctr.other.Add(1)
		return nil, nil, info, err
	}
	if fb == FallbackNone {
		info.Offloaded, info.Path = true, PathKernel
		e.ctr.ok.Add(1)
		e.ctr.countPath(&info)
		return kc, raw, info, nil
	}
	if e.mode == ModeRequire {
		e.ctr.other.Add(1)
		return nil, nil, info, fmt.Errorf("%w: %s", ErrOffloadRequired, fb)
	}
	conn := e.userspace(raw, tc, hc, &cs, &info)
	e.ctr.ok.Add(1)
	e.ctr.countPath(&info)
	return conn, nil, info, nil
}

// tryOffload hands the records to the kernel when the mode and the build
// allow, else says why not.
func (e *endpoint) tryOffload(raw *net.TCPConn, hc *handshakeConn, cs *tls.ConnectionState) (*Conn, Fallback, error) {
	switch {
	case e.mode == ModeOff:
		return nil, FallbackOff, nil
	case hc == nil || !kernelTLSBuilt:
		return nil, FallbackNoKernel, nil
	}
	return offload(raw, hc, cs, e.server)
}

// userspace picks the user-space record layer of a connection the kernel
// did not take: a RecordConn when the endpoint, the cipher and the
// captured keys allow, else tc (crypto/tls), with the reason in info.
func (e *endpoint) userspace(raw *net.TCPConn, tc *tls.Conn, hc *handshakeConn, cs *tls.ConnectionState, info *ConnInfo) net.Conn {
	why := e.cryptoTLS
	if why == CryptoTLSNone && hc == nil {
		why = CryptoTLSNoSecrets // not reached: wantsHandshakeConn
	}
	if why == CryptoTLSNone {
		var rc *RecordConn
		if rc, why = userRecords(raw, hc, cs, e.server); rc != nil {
			info.Path = PathRecords
			return rc // tc is dropped: it holds nothing past the handshake
		}
	}
	if hc != nil {
		hc.passthrough = true // crypto/tls from here: no per-record reads
	}
	info.Path, info.CryptoTLSReason = PathCryptoTLS, why
	return &CryptoConn{Conn: tc, sock: raw}
}

// offload hands the connection's record state to the kernel. It returns
// a fallback reason when the connection should stay in user space, and an
// error only when the socket is left half-configured.
func offload(raw *net.TCPConn, rc *handshakeConn, cs *tls.ConnectionState, server bool) (*Conn, Fallback, error) {
	s, ok := offloadable(cs.Version, cs.CipherSuite)
	if !ok {
		return nil, FallbackCipher, nil
	}
	tx, rx, ok := rc.directionKeys(s, cs.Version, server)
	defer tx.zero()
	defer rx.zero()
	if !ok {
		return nil, FallbackNoSecrets, nil
	}
	return enableKTLS(raw, &tx, &rx)
}

// directionKeys derives our TX and RX keys and sequence numbers from what
// rc captured. ok is false when anything is missing or inconsistent, in
// which case the connection stays in user space.
func (r *handshakeConn) directionKeys(s suite, version uint16, server bool) (tx, rx trafficKeys, ok bool) {
	clientHello, serverHello := &r.out, &r.in
	chN, shN := r.outN, r.inN
	if server {
		clientHello, serverHello = &r.in, &r.out
		chN, shN = r.inN, r.outN
	}
	crand, ok := helloRandom(clientHello, chN, handshakeClientHello)
	if !ok || r.keylogErr {
		return tx, rx, false
	}
	var client, srvKeys trafficKeys
	switch version {
	case tls.VersionTLS13:
		cs, ss := &r.clientSecret, &r.serverSecret
		if cs.n == 0 || ss.n == 0 || !bytes.Equal(cs.random[:], crand) ||
			!bytes.Equal(ss.random[:], crand) || r.ticketsUnknown {
			return tx, rx, false
		}
		var err1, err2 error
		// Application records start at seq 0 each way; the server has
		// already written its tickets under its key (see wrapSession).
		client, err1 = keysTLS13(s, cs.bytes(), 0)
		srvKeys, err2 = keysTLS13(s, ss.bytes(), r.ticketRecords)
		if err1 != nil || err2 != nil {
			return tx, rx, false
		}
	case tls.VersionTLS12:
		srand, ok := helloRandom(serverHello, shN, handshakeServerHello)
		m := &r.master
		if !ok || m.n != secretBytesMax || !bytes.Equal(m.random[:], crand) {
			return tx, rx, false
		}
		client, srvKeys = keysTLS12(s, m.bytes(), crand, srand)
	default:
		return tx, rx, false
	}
	if server {
		return srvKeys, client, true
	}
	return client, srvKeys, true
}
