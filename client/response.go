package client

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Errors of ReadResponse. All are package-level values so returning one
// does not allocate; Status is what the client of the proxy gets.
var (
	// ErrNoResponse: the upstream closed or reset the connection before
	// sending any response byte. On a reused pooled connection this is
	// the keep-alive race, which the proxy may retry.
	ErrNoResponse = &serval.StatusError{Status: 502, Msg: "client: upstream closed before responding"}
	// ErrTruncatedHead: the connection ended inside a response head, or
	// after an interim (1xx) response and before the final one.
	ErrTruncatedHead = &serval.StatusError{Status: 502, Msg: "client: upstream closed inside the response head"}
	// ErrReadFailed: any other read error while reading a head.
	ErrReadFailed = &serval.StatusError{Status: 502, Msg: "client: reading the response head failed"}
	// ErrResponseTimeout: the head was not complete by the deadline.
	ErrResponseTimeout = &serval.StatusError{Status: 504, Msg: "client: upstream response head timeout"}
	// ErrHeadTooLarge: no complete head within the head limit.
	ErrHeadTooLarge = &serval.StatusError{Status: 502, Msg: "client: upstream response head too large"}
	// ErrInterimMax: more than InterimReadMax 1xx responses.
	ErrInterimMax = &serval.StatusError{Status: 502, Msg: "client: too many interim responses"}
	// ErrUnexpectedSwitch: 101 Switching Protocols to a request that did
	// not ask to upgrade (upgrades are not proxied yet).
	ErrUnexpectedSwitch = &serval.StatusError{Status: 502, Msg: "client: unexpected 101 switching protocols"}
	// ErrWriteFailed: writing the request head failed.
	ErrWriteFailed = &serval.StatusError{Status: 502, Msg: "client: writing the request failed"}
)

// InterimReadMax bounds the 1xx responses read before the final one; the
// first serval.InterimResponsesMax go to the InterimHandler, the rest are
// read and dropped (an upstream may send 102 Processing every few seconds
// of a long operation; the response deadline bounds the wait). The bound
// keeps an upstream that floods interim heads from holding us in the loop.
const InterimReadMax = 1024

// InterimHandler receives each 1xx interim response before the final one
// (100 Continue, 103 Early Hints). resp is valid only until it returns.
// A non-nil error stops ReadResponse and is returned as is.
type InterimHandler interface {
	Interim(resp *serval.Response) error
}

// Head is where a final response head lies in the caller's buffer.
type Head struct {
	// HeadBytes is the head's length: buf[:HeadBytes].
	HeadBytes int
	// End is how many bytes buf holds: buf[HeadBytes:End] are body bytes
	// (or stray bytes) read with the head.
	End int
	// Body is the framing of the body that follows.
	Body http1.BodyKind
}

// AppendHead appends the request head of out to dst (for a single write).
func AppendHead(dst []byte, out *serval.Outbound) []byte {
	return http1.AppendRequestHead(dst, out.Method, out.Path, out.Fields)
}

// WriteHead writes a head built by AppendHead (plus any body bytes the
// caller appended) under deadline (zero: the one the caller set). It reports ErrWriteFailed wrapped in
// nothing: the cause is returned second so the caller can log it.
func WriteHead(conn net.Conn, b []byte, deadline time.Time) (cause error, err error) {
	if deadline.IsZero() {
		// The caller keeps the deadline (e.g. serval.Deadlines).
	} else if err := conn.SetWriteDeadline(deadline); err != nil {
		return err, ErrWriteFailed
	}
	if _, err := conn.Write(b); err != nil {
		return err, ErrWriteFailed
	}
	return nil, nil
}

// ReadResponse reads the final response head into buf, which holds `have`
// bytes already read. Interim 1xx responses go to on (nil drops them) and
// are consumed from buf. method is the request's method (a HEAD response
// has no body); upgrade tells whether the request asked to switch
// protocols. The deadline bounds the whole wait (zero: the one the caller
// set). len(buf) must be at
// least lim.HeadBytesMax. cause, when err != nil, is the underlying I/O
// error for logs (nil for protocol errors).
func ReadResponse(conn net.Conn, buf []byte, have int, resp *serval.Response, lim *http1.Limits,
	deadline time.Time, method serval.Method, upgrade bool, on InterimHandler) (h Head, cause, err error) {
	if len(buf) < lim.HeadBytesMax {
		panic("client: response buffer smaller than the head limit")
	}
	if deadline.IsZero() {
		// The caller keeps the deadline (e.g. serval.Deadlines).
	} else if err := conn.SetReadDeadline(deadline); err != nil {
		return Head{}, err, ErrReadFailed
	}
	for interim := 0; ; interim++ {
		n, end, cause, err := readHead(conn, buf, have, resp, lim)
		if err != nil {
			if err == ErrNoResponse && interim > 0 {
				// An interim response came first: the upstream had the
				// request and answered part of it, and the client may
				// have that part. The answer is cut, not missing, and
				// not Retryable.
				err = ErrTruncatedHead
			}
			return Head{}, cause, err
		}
		if resp.Status >= 200 || (resp.Status == 101 && upgrade) {
			return Head{HeadBytes: n, End: end, Body: Body(resp, method)}, nil, nil
		}
		if resp.Status == 101 {
			return Head{}, nil, ErrUnexpectedSwitch
		}
		if interim == InterimReadMax {
			return Head{}, nil, ErrInterimMax
		}
		if on != nil && interim < serval.InterimResponsesMax {
			if err := on.Interim(resp); err != nil {
				return Head{}, nil, err
			}
		}
		have = copy(buf, buf[n:end])
	}
}

// Body tells the framing of a final response's body (none for HEAD, 1xx,
// 204 and 304; RFC 9112 §6.3).
func Body(resp *serval.Response, method serval.Method) http1.BodyKind {
	if resp.Status < 200 {
		return http1.BodyNone
	}
	return http1.ResponseBody(resp, method)
}

// readHead reads until buf[:end] starts with a complete head and parses it.
// Reads may fill all of buf: the body bytes that came with the head are
// then at hand (one read, and one write to the client, for a body that
// fits), while the head itself is bounded by lim.HeadBytesMax.
func readHead(conn net.Conn, buf []byte, have int, resp *serval.Response, lim *http1.Limits) (n, end int, cause, err error) {
	end = have
	for {
		if end > 0 {
			n, err = http1.ParseResponse(buf[:end], resp, lim)
			if err == nil {
				return n, end, nil, nil
			}
			if err != http1.ErrIncomplete {
				return 0, 0, nil, err
			}
			if end >= lim.HeadBytesMax {
				return 0, 0, nil, ErrHeadTooLarge
			}
		}
		// Bounded: every pass reads at least one byte, and a pass that
		// ends with HeadBytesMax bytes or more in buf returns.
		m, rerr := conn.Read(buf[end:])
		end += m
		if rerr != nil && m == 0 {
			return 0, 0, rerr, classify(rerr, end)
		}
	}
}

// classify maps a read error to a response-head error.
func classify(err error, got int) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrResponseTimeout
	case got > 0:
		return ErrTruncatedHead
	case err == io.EOF, errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ErrNoResponse
	}
	return ErrReadFailed
}

// Retryable reports whether err (from WriteHead or ReadResponse) means
// the upstream dropped the connection before any response byte: the
// keep-alive race a reused connection may lose.
func Retryable(err error) bool { return err == ErrNoResponse || err == ErrWriteFailed }
