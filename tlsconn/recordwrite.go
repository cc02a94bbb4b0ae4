package tlsconn

import (
	"encoding/binary"
	"net"
)

// Write sends p as application data records of at most maxPlaintext
// bytes each, one write(2) per record; a p of up to maxPlaintext bytes is
// one record and one syscall. An error is sticky (part of a record may be
// on the wire), timeouts included, as in crypto/tls.
func (c *RecordConn) Write(p []byte) (int, error) {
	if !c.beginWrite() {
		return 0, net.ErrClosed
	}
	defer c.active.Add(-2)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.keyUpdateDue.Load() {
		if err := c.sendKeyUpdateLocked(false); err != nil {
			return 0, err
		}
	}
	n := 0
	for len(p) > 0 { // ends: each pass consumes up to maxPlaintext bytes
		m := min(len(p), maxPlaintext)
		if err := c.writeRecordLocked(recordAppData, p[:m]); err != nil {
			return n, err
		}
		n, p = n+m, p[m:]
	}
	return n, nil
}

// writeRecordLocked seals data as one record of type typ into wbuf and
// writes it. The sequence number is consumed before the write, so a nonce
// is never used twice even if the write fails.
func (c *RecordConn) writeRecordLocked(typ byte, data []byte) error {
	if c.v13 && typ == recordAppData && c.tx.k.seq >= c.rekeyAt {
		if err := c.sendKeyUpdateLocked(false); err != nil {
			return err
		}
	}
	if c.tx.k.seq == seqMax {
		c.werr = errSeqExhausted
		return c.werr
	}
	var rec []byte
	if c.v13 {
		rec = c.seal13(typ, data)
	} else {
		rec = c.seal12(typ, data)
	}
	c.tx.k.seq++
	if _, err := c.conn.Write(rec); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// seal13 builds a TLS 1.3 record: outer header application_data 0x0303,
// inner plaintext data || typ (no padding), sealed in place with the
// header as additional data (RFC 8446 §5.2).
func (c *RecordConn) seal13(typ byte, data []byte) []byte {
	b := c.wbuf[:]
	n := len(data) + 1 + tagBytes
	b[0], b[1], b[2], b[3], b[4] = recordAppData, 3, 3, byte(n>>8), byte(n)
	body := b[recordHeaderBytes:]
	copy(body, data)
	body[len(data)] = typ
	out := c.tx.aead.Seal(body[:0], c.tx.nonceFor(), body[:len(data)+1], b[:recordHeaderBytes])
	return b[:recordHeaderBytes+len(out)]
}

// seal12 builds a TLS 1.2 record: header, for AES-GCM the nonce_explicit
// (our sequence number; RFC 5288), then data sealed in place (RFC 5246
// §6.2.3.3). ChaCha20-Poly1305 records have no nonce_explicit (RFC 7905).
func (c *RecordConn) seal12(typ byte, data []byte) []byte {
	b := c.wbuf[:]
	e := c.tx.explicitLen()
	n := e + len(data) + tagBytes
	b[0], b[1], b[2], b[3], b[4] = typ, 3, 3, byte(n>>8), byte(n)
	if c.tx.explicitNonce {
		binary.BigEndian.PutUint64(b[recordHeaderBytes:], c.tx.k.seq)
	}
	body := b[recordHeaderBytes+e:]
	copy(body, data)
	out := c.tx.aead.Seal(body[:0], c.tx.nonceFor(), body[:len(data)], c.tx.ad12(typ, len(data)))
	return b[:recordHeaderBytes+e+len(out)]
}

// sendAlertLocked sends an alert: close_notify as a warning, anything
// else fatal. Either ends our sending side.
func (c *RecordConn) sendAlertLocked(desc uint8) error {
	c.ctl[0], c.ctl[1] = alertLevelFatal, desc
	if desc == alertCloseNotify {
		c.ctl[0] = alertLevelWarning
	}
	err := c.writeRecordLocked(recordAlert, c.ctl[:2])
	c.notified = true
	if err == nil {
		c.werr = errAlertSent
		if desc == alertCloseNotify {
			c.werr = errWriteShutdown
		}
	}
	return err
}

// sendKeyUpdateLocked sends a TLS 1.3 KeyUpdate under the current key,
// then moves our sending side to the next traffic secret (RFC 8446
// §4.6.3). requestPeer asks the peer to update its own.
func (c *RecordConn) sendKeyUpdateLocked(requestPeer bool) error {
	c.ctl = [keyUpdateMsgBytes]byte{handshakeKeyUpdate, 0, 0, 1, 0}
	if requestPeer {
		c.ctl[4] = 1
	}
	if err := c.writeRecordLocked(recordHandshake, c.ctl[:]); err != nil {
		return err
	}
	c.keyUpdateDue.Store(false) // any KeyUpdate of ours answers a request
	if err := c.tx.update(); err != nil {
		c.werr = errRekey
		return err
	}
	return nil
}

// handshakeMsg takes the body of a post-handshake handshake record. TLS
// 1.2: renegotiation, refused. TLS 1.3: a KeyUpdate (possibly fragmented
// across records, but the last message of its record) is honoured; a
// client's NewSessionTicket is refused, a server's skipped (client role);
// anything else ends the connection.
func (c *RecordConn) handshakeMsg(p []byte) error {
	if !c.v13 {
		return errRenegotiation
	}
	if len(p) == 0 {
		return errPostHandshake // no zero-length handshake fragments (RFC 8446 §5.1)
	}
	for len(p) > 0 { // ends: each pass consumes at least one byte
		if c.hsSkip > 0 {
			k := min(len(p), c.hsSkip)
			p, c.hsSkip = p[k:], c.hsSkip-k
			continue
		}
		if c.hsN < handshakeHeaderBytes {
			k := copy(c.hs[c.hsN:handshakeHeaderBytes], p)
			p, c.hsN = p[k:], c.hsN+k
			if c.hsN == handshakeHeaderBytes {
				if err := c.handshakeHeader(); err != nil {
					return err
				}
			}
			continue
		}
		request := p[0] // the KeyUpdate's one body byte
		p, c.hsN = p[1:], 0
		if len(p) > 0 {
			return errKeyUpdateSpan // no message may span a key change
		}
		return c.keyUpdate(request)
	}
	return nil
}

// handshakeHeader checks a post-handshake message header held in hs.
func (c *RecordConn) handshakeHeader() error {
	n := int(c.hs[1])<<16 | int(c.hs[2])<<8 | int(c.hs[3])
	switch {
	case c.hs[0] == handshakeKeyUpdate:
		if n != 1 {
			return errKeyUpdateSize
		}
		return nil
	case c.hs[0] == handshakeNewSessionTicket && c.server:
		return errClientTicket
	case c.hs[0] == handshakeNewSessionTicket:
		if c.tickets++; c.tickets > ticketsMax {
			return errControlFlood
		}
		c.hsN, c.hsSkip = 0, n
		if n == 0 {
			return errPostHandshake
		}
		return nil
	}
	return errPostHandshake
}

// keyUpdate moves our receiving side to the peer's next traffic secret
// and, when asked, schedules our own KeyUpdate before our next record.
func (c *RecordConn) keyUpdate(request byte) error {
	if request > 1 {
		return errKeyUpdateValue
	}
	if err := c.rx.update(); err != nil {
		return errRekey
	}
	if request == 1 {
		c.keyUpdateDue.Store(true)
	}
	return nil
}
