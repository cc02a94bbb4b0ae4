//go:build linux

package tlsconn

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// kernelTLSBuilt: this build can try kernel TLS.
const kernelTLSBuilt = true

// From <linux/tcp.h> and <linux/tls.h>.
const (
	tcpULP           = 31  // TCP_ULP
	solTLS           = 282 // SOL_TLS
	tlsTX            = 1   // TLS_TX
	tlsRX            = 2   // TLS_RX
	tlsSetRecordType = 1   // TLS_SET_RECORD_TYPE (sendmsg cmsg)
	tlsGetRecordType = 2   // TLS_GET_RECORD_TYPE (recvmsg cmsg)

	// cmsgBufBytes holds one cmsg with a 1-byte payload (CMSG_SPACE(1)
	// is 24 on 64-bit) with room to spare.
	cmsgBufBytes = 64
	// probeTimeout bounds Probe's loopback connection.
	probeTimeout = 2 * time.Second
)

// connPlatform is Conn's recvmsg/sendmsg state, allocated with the Conn so
// Read and Close need no allocation. The read fields are used by one
// reader at a time (as any net.Conn); the send fields only by
// sendCloseNotify, which runs once.
type connPlatform struct {
	sc     syscall.RawConn
	readFn func(fd uintptr) bool // bound once: c.recvmsg
	sendFn func(fd uintptr) bool // bound once: c.sendmsg

	rmsg   syscall.Msghdr
	riov   syscall.Iovec
	rcmsg  [cmsgBufBytes / 8]uint64 // uint64: cmsghdr alignment
	rn     int
	rerrno syscall.Errno
	rerr   error // sticky: EOF, alert, protocol error

	alert   [2]byte // alert being assembled (level, description)
	alertN  int
	hs      [4]byte // handshake message header being assembled
	hsN     int
	hsLeft  int // body bytes of the current handshake message to skip
	tickets int

	smsg   syscall.Msghdr
	siov   syscall.Iovec
	scmsg  [cmsgBufBytes / 8]uint64
	sbuf   [2]byte
	serrno syscall.Errno
}

// enableKTLS installs the tls ULP and both directions' keys on raw.
// Stages: no ULP (fall back, plain socket), ULP but TX refused (fall back:
// a tls ULP without keys passes bytes through unchanged), TX set but RX
// refused (error: the kernel now encrypts, user space cannot continue).
func enableKTLS(raw *net.TCPConn, tx, rx *trafficKeys) (*Conn, Fallback, error) {
	sc, err := raw.SyscallConn()
	if err != nil {
		return nil, 0, fmt.Errorf("tlsconn: kernel TLS: %w", err)
	}
	var (
		stage int
		serr  error
		info  [cryptoInfoBytesMax]byte
	)
	cerr := sc.Control(func(fd uintptr) {
		if serr = setsockopt(fd, syscall.IPPROTO_TCP, tcpULP, []byte("tls")); serr != nil {
			return
		}
		stage = 1
		n := tx.cryptoInfo(&info)
		serr = setsockopt(fd, solTLS, tlsTX, info[:n])
		clear(info[:])
		if serr != nil {
			return
		}
		stage = 2
		n = rx.cryptoInfo(&info)
		serr = setsockopt(fd, solTLS, tlsRX, info[:n])
		clear(info[:])
		if serr == nil {
			stage = 3
		}
	})
	switch {
	case cerr != nil:
		return nil, 0, fmt.Errorf("tlsconn: kernel TLS: %w", cerr)
	case stage == 0:
		return nil, FallbackNoKernel, nil // ENOENT: no tls module
	case stage == 1:
		return nil, FallbackCipher, nil
	case stage == 2:
		return nil, 0, fmt.Errorf("tlsconn: kernel TLS: TLS_TX set but TLS_RX refused: %w", serr)
	}
	return newConn(raw, sc), FallbackNone, nil
}

func setsockopt(fd uintptr, level, opt int, v []byte) error {
	_, _, e := syscall.Syscall6(syscall.SYS_SETSOCKOPT, fd, uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func newConn(raw *net.TCPConn, sc syscall.RawConn) *Conn {
	c := &Conn{tcp: raw}
	p := &c.p
	p.sc = sc
	p.readFn = p.recvmsg
	p.sendFn = p.sendmsg
	p.rmsg.Iov = &p.riov
	p.rmsg.Iovlen = 1
	p.rmsg.Control = (*byte)(unsafe.Pointer(&p.rcmsg[0]))
	return c
}

// Read returns application data. Non-data records are handled here:
// NewSessionTicket is skipped, close_notify is io.EOF, other alerts are an
// AlertError, KeyUpdate and anything else end the connection with an
// error.
func (c *Conn) Read(b []byte) (int, error) {
	p := &c.p
	if p.rerr != nil {
		return 0, p.rerr
	}
	if len(b) == 0 {
		return 0, nil
	}
	for range controlRecordsPerReadMax {
		n, typ, err := p.recv(b)
		if err != nil {
			return 0, err
		}
		if typ == recordAppData {
			if n == 0 { // TCP FIN at a record boundary, like crypto/tls
				p.rerr = io.EOF
				return 0, io.EOF
			}
			return n, nil
		}
		if err := p.control(typ, b[:n]); err != nil {
			p.rerr = err
			return 0, err
		}
	}
	p.rerr = errControlFlood
	return 0, p.rerr
}

// recv runs one recvmsg into b through the poller (deadlines apply) and
// returns the record type from the TLS_GET_RECORD_TYPE cmsg.
func (p *connPlatform) recv(b []byte) (int, byte, error) {
	p.riov.Base = &b[0]
	p.riov.SetLen(len(b))
	p.rmsg.SetControllen(cmsgBufBytes)
	p.rmsg.Flags = 0
	err := p.sc.Read(p.readFn)
	p.riov.Base = nil // do not keep the caller's buffer
	if err != nil {
		return 0, 0, err
	}
	if p.rerrno != 0 {
		p.rerr = recvError(p.rerrno)
		return 0, 0, p.rerr
	}
	typ := byte(recordAppData)
	if int(p.rmsg.Controllen) >= syscall.CmsgLen(1) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&p.rcmsg[0]))
		if h.Level == solTLS && h.Type == tlsGetRecordType {
			typ = *(*byte)(unsafe.Add(unsafe.Pointer(&p.rcmsg[0]), syscall.CmsgLen(0)))
		}
	}
	return p.rn, typ, nil
}

func (p *connPlatform) recvmsg(fd uintptr) bool {
	for {
		n, _, e := syscall.Syscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&p.rmsg)), 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait for readability
		}
		p.rn, p.rerrno = int(n), e
		return true
	}
}

func recvError(e syscall.Errno) error {
	if e == syscall.EBADMSG {
		return fmt.Errorf("tlsconn: kernel TLS: record failed authentication: %w", os.NewSyscallError("recvmsg", e))
	}
	return fmt.Errorf("tlsconn: kernel TLS: %w", os.NewSyscallError("recvmsg", e))
}

// control consumes (part of) a non-data record. The kernel may hand a
// record over in pieces when b is small, so alerts and handshake headers
// are assembled across calls.
func (p *connPlatform) control(typ byte, b []byte) error {
	switch typ {
	case recordAlert:
		p.alertN += copy(p.alert[p.alertN:], b)
		if p.alertN < len(p.alert) {
			return nil
		}
		if p.alert[1] == 0 { // close_notify
			return io.EOF
		}
		return AlertError(p.alert[1])
	case recordHandshake:
		return p.handshakeBytes(b)
	}
	return errUnexpectedRecord
}

// handshakeBytes skips NewSessionTicket messages (we cannot hand them to
// crypto/tls once it is out of the picture) and rejects everything else:
// a KeyUpdate would need new keys the 6.1 kernel cannot take.
func (p *connPlatform) handshakeBytes(b []byte) error {
	for len(b) > 0 {
		if p.hsLeft > 0 {
			k := min(len(b), p.hsLeft)
			b, p.hsLeft = b[k:], p.hsLeft-k
			continue
		}
		k := copy(p.hs[p.hsN:], b)
		b, p.hsN = b[k:], p.hsN+k
		if p.hsN < len(p.hs) {
			return nil
		}
		p.hsN = 0
		switch p.hs[0] {
		case handshakeNewSessionTicket:
			if p.tickets++; p.tickets > ticketsMax {
				return errControlFlood
			}
			p.hsLeft = int(p.hs[1])<<16 | int(p.hs[2])<<8 | int(p.hs[3])
		case handshakeKeyUpdate:
			return errKeyUpdate
		default:
			return errUnexpectedHandshake
		}
	}
	return nil
}

// sendCloseNotify sends the alert record {warning(1), close_notify(0)}
// through sendmsg with a TLS_SET_RECORD_TYPE cmsg of 21 (alert).
func (c *Conn) sendCloseNotify() error {
	p := &c.p
	p.sbuf = [2]byte{1, 0}
	p.siov.Base = &p.sbuf[0]
	p.siov.SetLen(len(p.sbuf))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&p.scmsg[0]))
	h.Level, h.Type = solTLS, tlsSetRecordType
	h.SetLen(syscall.CmsgLen(1))
	*(*byte)(unsafe.Add(unsafe.Pointer(&p.scmsg[0]), syscall.CmsgLen(0))) = recordAlert
	p.smsg.Iov, p.smsg.Iovlen = &p.siov, 1
	p.smsg.Control = (*byte)(unsafe.Pointer(&p.scmsg[0]))
	p.smsg.SetControllen(syscall.CmsgSpace(1))
	if err := p.sc.Write(p.sendFn); err != nil {
		return err
	}
	if p.serrno != 0 {
		return fmt.Errorf("tlsconn: close_notify: %w", os.NewSyscallError("sendmsg", p.serrno))
	}
	return nil
}

func (p *connPlatform) sendmsg(fd uintptr) bool {
	for {
		_, _, e := syscall.Syscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&p.smsg)), 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		p.serrno = e
		return true
	}
}

// Probe tells whether this kernel can offload TLS: it opens a loopback
// TCP pair, sets TCP_ULP "tls" and TLS_TX (AES-128-GCM, TLS 1.3, a dummy
// key; nothing is sent). reason is one line for the startup log: what
// was found, not what the caller does about it.
func Probe() (ok bool, reason string) {
	if err := probe(); err != nil {
		return false, "tlsconn: no kernel TLS (" + err.Error() + "; tcp_available_ulp=" +
			availableULP() + ")"
	}
	return true, "tlsconn: kernel TLS available (tcp_available_ulp=" + availableULP() + ")"
}

// probe is Probe with the error kept (tests check it for ENOENT).
func probe() error {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer ln.Close()
	_ = ln.SetDeadline(time.Now().Add(probeTimeout))
	d := net.Dialer{Timeout: probeTimeout}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := ln.AcceptTCP()
	if err != nil {
		return err
	}
	defer a.Close()
	return probeTX(a)
}

// probeTX sets TCP_ULP "tls" and TLS_TX with a zero TLS 1.3 AES-128-GCM key.
func probeTX(raw *net.TCPConn) error {
	sc, err := raw.SyscallConn()
	if err != nil {
		return err
	}
	k := trafficKeys{version: tls.VersionTLS13, s: suiteAES128}
	var serr error
	var info [cryptoInfoBytesMax]byte
	if err := sc.Control(func(fd uintptr) {
		if serr = setsockopt(fd, syscall.IPPROTO_TCP, tcpULP, []byte("tls")); serr != nil {
			serr = fmt.Errorf("setsockopt TCP_ULP tls: %w", serr)
			return
		}
		if serr = setsockopt(fd, solTLS, tlsTX, info[:k.cryptoInfo(&info)]); serr != nil {
			serr = fmt.Errorf("setsockopt SOL_TLS TLS_TX: %w", serr)
		}
	}); err != nil {
		return err
	}
	return serr
}

func availableULP() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
