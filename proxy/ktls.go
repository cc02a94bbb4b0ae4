package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
)

// Splicing from a kernel TLS socket.
//
// A socket the kernel decrypts (tlsconn.Conn) splices application data
// like a plain one, so Downstream.TCP and UpstreamConn.TCP are set for
// offloaded connections and Content-Length bodies take the splice path in
// both directions. Writing into such a socket is always safe: the kernel
// frames whatever arrives as application-data records. Reading is safe
// until the next record is a control record (an alert, close_notify, a
// TLS 1.3 NewSessionTicket): then splice fails with EINVAL (or, when Go
// fell back to read(2) because the very first splice failed, read fails
// with EIO) and nothing is consumed. The proxy then reads that stretch
// through the connection's Read, which consumes the control record
// (skipping a ticket, turning close_notify into io.EOF, an alert into an
// error) and returns the application data behind it, writes that data on,
// and resumes splicing. In practice a client sends no control record in
// the middle of a body except close_notify or an alert (both end the
// body), and a server sends its tickets before the response head, which
// is read through Conn.Read anyway; the fallback keeps the rare case
// correct instead of failing the exchange.

// spliceFallbacksMax bounds the control-record fallbacks of one body: a
// peer cannot turn the splice loop into an endless series of records.
const spliceFallbacksMax = 16

// kernelTLS reports whether conn is a TLS connection over the socket tcp
// (kernel TLS), as opposed to tcp itself.
func kernelTLS(conn net.Conn, tcp *net.TCPConn) bool {
	return conn != net.Conn(tcp)
}

// controlRecordNext reports whether a failed splice read says that a
// non-data TLS record is next on a kernel TLS socket.
func controlRecordNext(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EIO)
}

// logControlRecord notes a splice fallback at debug level (rare; the
// guard keeps the disabled level free).
func (s *Session) logControlRecord(side string, err error) {
	l := s.f.log
	if !l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	l.LogAttrs(context.Background(), slog.LevelDebug, "proxy: kernel TLS splice stopped at a control record; reading through the TLS connection",
		slog.String("side", side), slog.Any("err", err))
}
