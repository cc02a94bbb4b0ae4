package tlsconn

import (
	"errors"
	"io"
	"net"
)

// Read returns application data from one record. Control records met on
// the way are handled (see RecordConn) within controlRecordsPerReadMax per
// call. A timeout leaves the connection usable; any other error is
// sticky. A TCP FIN at a record boundary without close_notify reads as
// io.EOF (as crypto/tls), inside a record as io.ErrUnexpectedEOF.
func (c *RecordConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.pStart == c.pEnd {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(b) == 0 {
			return 0, nil
		}
		if err := c.nextData(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.rbuf[c.pStart:c.pEnd])
	c.pStart += n
	return n, nil
}

// nextData opens records until one carries application data, which it
// leaves in rbuf[pStart:pEnd].
func (c *RecordConn) nextData() error {
	for range controlRecordsPerReadMax {
		typ, lo, hi, err := c.readRecord()
		if err != nil {
			return c.readFailed(err)
		}
		if typ == recordAppData && hi > lo && !c.midHandshakeMsg() {
			c.pStart, c.pEnd = lo, hi
			return nil
		}
		if err := c.control(typ, c.rbuf[lo:hi]); err != nil {
			return c.readFailed(err)
		}
	}
	return c.readFailed(errControlFlood)
}

// readFailed records err. Timeouts are not sticky: a partial record stays
// buffered and the next Read resumes it. Our own protocol errors are
// answered with a fatal alert, best effort: if a Write holds the write
// side, the alert is skipped rather than make Read wait for it.
func (c *RecordConn) readFailed(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	c.rerr = err
	var re *recordError
	if errors.As(err, &re) && c.wmu.TryLock() {
		if c.werr == nil {
			_ = c.sendAlertLocked(re.alert)
		}
		c.wmu.Unlock()
	}
	return err
}

func (c *RecordConn) midHandshakeMsg() bool { return c.hsN > 0 || c.hsSkip > 0 }

// readRecord reads the next whole record into rbuf and opens it in place.
// It returns the content type and where its plaintext lies in rbuf.
func (c *RecordConn) readRecord() (typ byte, lo, hi int, err error) {
	if err := c.fill(recordHeaderBytes); err != nil {
		return 0, 0, 0, err
	}
	hdr := c.rbuf[c.rStart : c.rStart+recordHeaderBytes]
	n := int(hdr[3])<<8 | int(hdr[4])
	if err := c.checkHeader(hdr, n); err != nil {
		return 0, 0, 0, err
	}
	if err := c.fill(recordHeaderBytes + n); err != nil { // may move the bytes
		return 0, 0, 0, err
	}
	start := c.rStart
	rec := c.rbuf[start : start+recordHeaderBytes+n]
	c.rStart += len(rec)
	if c.v13 {
		typ, lo, hi, err = c.open13(rec)
	} else {
		typ, lo, hi, err = c.open12(rec)
	}
	return typ, start + lo, start + hi, err
}

// checkHeader validates a record header before its body is read: type,
// version and the length limit (record_overflow above it).
func (c *RecordConn) checkHeader(hdr []byte, n int) error {
	if hdr[1] != 3 || hdr[2] != 3 { // legacy_record_version / TLS 1.2
		return errRecordVersion
	}
	if c.v13 {
		// Every TLS 1.3 record after the handshake is protected, so
		// its outer type is application_data; a change_cipher_spec is
		// only dropped before the peer's Finished (RFC 8446 §5).
		if hdr[0] != recordAppData {
			return errRecordType
		}
		if n > ciphertextMax13 {
			return errRecordOverflow
		}
		return nil
	}
	switch hdr[0] {
	case recordAppData, recordAlert, recordHandshake:
	default: // change_cipher_spec included: it would start a renegotiation
		return errRecordType
	}
	if n > ciphertextMax12 {
		return errRecordOverflow
	}
	return nil
}

// fill makes rbuf[rStart:rEnd] hold at least need bytes, moving a partial
// record to the front first when it would not fit. It reads whatever the
// socket has (possibly several records) in one call.
func (c *RecordConn) fill(need int) error {
	if c.rEnd-c.rStart >= need {
		return nil
	}
	if c.rStart == c.rEnd || c.rStart+need > len(c.rbuf) {
		// Only between records, when no plaintext is pending: the
		// bytes moved are the start of the next record.
		c.rEnd = copy(c.rbuf[:], c.rbuf[c.rStart:c.rEnd])
		c.rStart = 0
	}
	for empty := 0; c.rEnd-c.rStart < need; {
		m, err := c.conn.Read(c.rbuf[c.rEnd:])
		c.rEnd += m
		switch {
		case c.rEnd-c.rStart >= need:
			return nil
		case err == io.EOF && c.rEnd == c.rStart:
			return io.EOF
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		case m == 0:
			if empty++; empty > emptyReadsMax {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// open13 opens a TLS 1.3 record (RFC 8446 §5.2): AD is the record header,
// the nonce comes from the sequence number, and the real content type is
// the last non-zero byte of the plaintext (zero padding stripped).
func (c *RecordConn) open13(rec []byte) (typ byte, lo, hi int, err error) {
	d := &c.rx
	if d.k.seq == seqMax {
		return 0, 0, 0, errSeqExhausted
	}
	hdr, body := rec[:recordHeaderBytes], rec[recordHeaderBytes:]
	inner, err := d.aead.Open(body[:0], d.nonceFor(), body, hdr)
	d.k.seq++
	if err != nil {
		return 0, 0, 0, errBadRecordMAC
	}
	if len(inner) > innerPlaintextMax13 {
		return 0, 0, 0, errRecordOverflow
	}
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 { // bounded by the record size
		i--
	}
	if i < 0 {
		return 0, 0, 0, errNoContentType
	}
	return inner[i], recordHeaderBytes, recordHeaderBytes + i, nil
}

// open12 opens a TLS 1.2 AEAD record (RFC 5246 §6.2.3.3): AD = seq ||
// type || version || length. AES-GCM (RFC 5288): nonce = salt ||
// nonce_explicit, the first 8 bytes of the body. ChaCha20-Poly1305 (RFC
// 7905): no nonce_explicit, nonce = IV XOR seq.
func (c *RecordConn) open12(rec []byte) (typ byte, lo, hi int, err error) {
	d := &c.rx
	if d.k.seq == seqMax {
		return 0, 0, 0, errSeqExhausted
	}
	hdr, body := rec[:recordHeaderBytes], rec[recordHeaderBytes:]
	e := d.explicitLen()
	if len(body) < e+tagBytes {
		return 0, 0, 0, errBadRecordMAC
	}
	n := len(body) - e - tagBytes
	var nonce []byte
	if d.explicitNonce {
		copy(d.nonce[:4], d.k.iv[:4])
		copy(d.nonce[4:], body[:explicitNonceBytes])
		nonce = d.nonce[:]
	} else {
		nonce = d.nonceFor()
	}
	ct := body[e:]
	plain, err := d.aead.Open(ct[:0], nonce, ct, d.ad12(hdr[0], n))
	d.k.seq++
	if err != nil {
		return 0, 0, 0, errBadRecordMAC
	}
	if len(plain) > maxPlaintext {
		return 0, 0, 0, errRecordOverflow
	}
	lo = recordHeaderBytes + e
	return hdr[0], lo, lo + len(plain), nil
}

// control handles an opened record that is not application data for the
// caller: an empty application data record (skipped), an alert, or a
// post-handshake handshake message.
func (c *RecordConn) control(typ byte, p []byte) error {
	switch typ {
	case recordAppData, recordAlert:
		if c.midHandshakeMsg() {
			return errInterleaved // RFC 8446 §5.1
		}
		if typ == recordAppData {
			return nil // empty: allowed, skipped within the budget
		}
		return c.alert(p)
	case recordHandshake:
		return c.handshakeMsg(p)
	}
	return errRecordType
}

// alert turns a peer's alert into the Read result: close_notify is
// io.EOF; TLS 1.3 user_canceled and TLS 1.2 warnings are skipped, as
// crypto/tls does; anything else is a fatal AlertError.
func (c *RecordConn) alert(p []byte) error {
	if len(p) != 2 {
		return errAlertFormat
	}
	switch {
	case p[1] == alertCloseNotify:
		return io.EOF
	case c.v13 && p[1] == alertUserCanceled:
		return nil
	case c.v13 || p[0] == alertLevelFatal:
		return AlertError(p[1])
	case p[0] == alertLevelWarning:
		return nil
	}
	return errAlertFormat
}
