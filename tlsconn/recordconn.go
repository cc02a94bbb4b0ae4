package tlsconn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Alert levels and descriptions (RFC 8446 §6, RFC 5246 §7.2).
const (
	alertLevelWarning      = 1
	alertLevelFatal        = 2
	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertHandshakeFailure  = 40
	alertIllegalParameter  = 47
	alertDecodeError       = 50
	alertProtocolVersion   = 70
	alertInternalError     = 80
	alertUserCanceled      = 90

	// keyUpdateMsgBytes is a whole KeyUpdate message: type, uint24
	// length (1), request_update.
	keyUpdateMsgBytes = 4 + 1
	// handshakeHeaderBytes is a handshake message's type and uint24 length.
	handshakeHeaderBytes = 4
	// emptyReadsMax bounds socket reads that return no bytes and no error
	// (io.Reader discourages them; this is the loop's budget).
	emptyReadsMax = 100
)

// recordError is a fatal record layer error that we answer with an alert
// (sent best effort) before the connection is given up.
type recordError struct {
	alert uint8
	msg   string
}

func (e *recordError) Error() string { return e.msg }

var (
	errBadRecordMAC   = &recordError{alertBadRecordMAC, "tlsconn: record failed authentication (bad_record_mac)"}
	errRecordOverflow = &recordError{alertRecordOverflow, "tlsconn: record too large (record_overflow)"}
	errRecordVersion  = &recordError{alertProtocolVersion, "tlsconn: record with a wrong version"}
	errRecordType     = &recordError{alertUnexpectedMessage, "tlsconn: unexpected record type after the handshake"}
	errNoContentType  = &recordError{alertUnexpectedMessage, "tlsconn: TLS 1.3 record without a content type"}
	errAlertFormat    = &recordError{alertUnexpectedMessage, "tlsconn: malformed alert record"}
	errInterleaved    = &recordError{alertUnexpectedMessage, "tlsconn: handshake message interleaved with other records"}
	errRenegotiation  = &recordError{alertHandshakeFailure, "tlsconn: TLS 1.2 handshake message after the handshake (renegotiation refused)"}
	errPostHandshake  = &recordError{alertUnexpectedMessage, "tlsconn: unexpected post-handshake message"}
	errClientTicket   = &recordError{alertUnexpectedMessage, "tlsconn: client sent NewSessionTicket"}
	errKeyUpdateSize  = &recordError{alertDecodeError, "tlsconn: malformed KeyUpdate"}
	errKeyUpdateValue = &recordError{alertIllegalParameter, "tlsconn: KeyUpdate request_update out of range"}
	errKeyUpdateSpan  = &recordError{alertUnexpectedMessage, "tlsconn: data after KeyUpdate in the same record"}
	errRekey          = &recordError{alertInternalError, "tlsconn: KeyUpdate: cannot derive the next keys"}
	errWriteShutdown  = errors.New("tlsconn: write after close_notify (CloseWrite)")
	errAlertSent      = errors.New("tlsconn: connection failed: fatal alert sent")
)

// RecordConn is a TLS connection whose records Serval protects in user
// space: AES-GCM or ChaCha20-Poly1305, TLS 1.3 or TLS 1.2, on the keys and
// sequence numbers crypto/tls negotiated. Server.Handshake returns one
// when kernel TLS is not used (no tls module, ModeOff, or the kernel
// refused the cipher) and the keys were captured, unless
// ServerConfig.CryptoTLSRecords is set.
//
// Unlike *tls.Conn it allocates nothing per Read or Write: records are
// read into a buffer owned by the connection (one record of the largest
// legal size, allocated with it), opened in place, and handed out from
// there; writes are sealed into a second fixed buffer, one record (and one
// write(2)) per maxPlaintext bytes. Plaintext is never returned before the
// record's tag has been verified.
//
// Post-handshake messages: TLS 1.3 KeyUpdate is honoured (receive key
// ratcheted at once; when the peer asks, our own KeyUpdate goes out before
// our next application data record), and we rekey on our own after
// keyUpdateRecords records. Any other post-handshake message, and any
// TLS 1.2 handshake record (renegotiation), ends the connection with an
// alert. close_notify reads as io.EOF; other alerts are an AlertError.
//
// One Read and one Write may run at once, as for any net.Conn. Close sends
// close_notify (bounded by closeNotifyTimeout) unless a Write is in
// flight, closes the socket and wipes the keys.
type RecordConn struct {
	conn   net.Conn // the socket (a *net.TCPConn outside tests)
	server bool
	v13    bool

	active atomic.Int32 // Write/Close interlock, as crypto/tls: 2 per Write, bit 0 closed
	// keyUpdateDue: the peer asked for a KeyUpdate (TLS 1.3); Write sends
	// ours before its next record. Set by the reader, cleared by the writer.
	keyUpdateDue atomic.Bool

	rmu     sync.Mutex // the read side: everything down to rbuf
	rx      direction
	rerr    error // sticky: EOF, alert, protocol error, socket error
	hs      [handshakeHeaderBytes]byte
	hsN     int // header bytes of a post-handshake message held in hs
	hsSkip  int // body bytes of a NewSessionTicket still to skip (client role)
	tickets int
	rStart  int // rbuf[rStart:rEnd] holds received bytes not yet opened
	rEnd    int
	pStart  int // rbuf[pStart:pEnd] holds plaintext not yet returned
	pEnd    int
	rbuf    [readBufBytes]byte

	wmu      sync.Mutex // the write side: everything down to wbuf
	tx       direction
	werr     error // sticky: a record may be half on the wire
	notified bool  // close_notify sent
	rekeyAt  uint64
	ctl      [keyUpdateMsgBytes]byte // body of an alert or KeyUpdate we send
	wbuf     [writeBufBytes]byte
}

// newRecordConn builds a RecordConn on conn from both directions' keys
// (copied; the caller wipes its copies) and, for TLS 1.3, the traffic
// secrets they came from.
func newRecordConn(conn net.Conn, server bool, tx, rx *trafficKeys, txSecret, rxSecret []byte) (*RecordConn, error) {
	if tx.version != rx.version || tx.s.kernelCipher != rx.s.kernelCipher {
		return nil, errors.New("tlsconn: record layer: unsupported keys")
	}
	c := &RecordConn{conn: conn, server: server, v13: tx.version == tls.VersionTLS13, rekeyAt: keyUpdateRecords}
	if err := c.tx.init(tx, txSecret); err != nil {
		return nil, err
	}
	if err := c.rx.init(rx, rxSecret); err != nil {
		c.tx.zero()
		return nil, err
	}
	return c, nil
}

// userRecords moves a handshaken connection onto a RecordConn. It returns
// the reason when the connection has to stay in crypto/tls.
func userRecords(raw net.Conn, hc *handshakeConn, cs *tls.ConnectionState, server bool) (*RecordConn, CryptoTLSReason) {
	s, ok := recordSuite(cs.Version, cs.CipherSuite)
	if !ok {
		return nil, CryptoTLSCipher
	}
	tx, rx, ok := hc.directionKeys(s, cs.Version, server)
	defer tx.zero()
	defer rx.zero()
	if !ok {
		return nil, CryptoTLSNoSecrets
	}
	var txSecret, rxSecret []byte
	if cs.Version == tls.VersionTLS13 {
		txSecret, rxSecret = hc.serverSecret.bytes(), hc.clientSecret.bytes()
		if !server {
			txSecret, rxSecret = rxSecret, txSecret
		}
	}
	rc, err := newRecordConn(raw, server, &tx, &rx, txSecret, rxSecret)
	if err != nil {
		return nil, CryptoTLSNoSecrets
	}
	return rc, CryptoTLSNone
}

// UseTransport makes c read and write its records through t from now on:
// t must carry the same socket (a wrapper that does the socket's I/O its
// own way, such as the server's readiness-polled connection). Call it
// right after the handshake, before any Read, Write or Close; c closes t
// when it is closed.
func (c *RecordConn) UseTransport(t net.Conn) { c.conn = t }

func (c *RecordConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *RecordConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *RecordConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *RecordConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *RecordConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Close sends close_notify (bounded by closeNotifyTimeout; skipped when a
// Write is in flight, which Close is then taken to interrupt, as
// crypto/tls does), closes the socket and wipes keys and buffers.
func (c *RecordConn) Close() error {
	var x int32
	for {
		x = c.active.Load()
		if x&1 != 0 {
			return net.ErrClosed
		}
		if c.active.CompareAndSwap(x, x|1) {
			break
		}
	}
	if x == 0 {
		c.wmu.Lock()
		if !c.notified && c.werr == nil {
			_ = c.conn.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
			_ = c.sendAlertLocked(alertCloseNotify) // best effort, as crypto/tls
		}
		c.wmu.Unlock()
	}
	err := c.conn.Close() // unblocks a Read or Write in progress
	c.wipe()
	return err
}

// CloseWrite sends close_notify and shuts down the sending side of the
// socket, for half-closed proxying. Later Writes fail. No alert follows
// a failed write (part of a record may be on the wire), and the socket's
// sending side is shut even when the alert cannot go (a write deadline in
// the past): the peer reads a plain end of stream either way.
func (c *RecordConn) CloseWrite() error {
	if !c.beginWrite() {
		return net.ErrClosed
	}
	defer c.active.Add(-2)
	c.wmu.Lock()
	var err error
	if !c.notified && c.werr == nil {
		err = c.sendAlertLocked(alertCloseNotify)
	}
	if c.werr == nil {
		c.werr = errWriteShutdown
	}
	c.wmu.Unlock()
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		if cerr := cw.CloseWrite(); err == nil {
			err = cerr
		}
	}
	return err
}

// wipe zeroes both directions' keys and the plaintext left in the
// buffers, once the socket is closed (so no Read or Write holds a lock
// for long).
func (c *RecordConn) wipe() {
	c.wmu.Lock()
	c.tx.zero()
	c.werr = net.ErrClosed
	clear(c.wbuf[:])
	c.wmu.Unlock()
	c.rmu.Lock()
	c.rx.zero()
	c.rerr = net.ErrClosed
	c.pStart, c.pEnd, c.rStart, c.rEnd = 0, 0, 0, 0
	clear(c.rbuf[:])
	c.rmu.Unlock()
}

// beginWrite registers a Write with the Close interlock; false once closed.
func (c *RecordConn) beginWrite() bool {
	for {
		x := c.active.Load()
		if x&1 != 0 {
			return false
		}
		if c.active.CompareAndSwap(x, x+2) {
			return true
		}
	}
}
