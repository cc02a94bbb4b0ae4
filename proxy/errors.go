package proxy

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
)

// Operating errors. Package-level values: returning one never allocates.
var (
	errConnsMax          = &serval.StatusError{Status: 503, Msg: "proxy: upstream connection limit reached"}
	errNoUpstream        = &serval.StatusError{Status: 503, Msg: "proxy: no upstream available"}
	errConnect           = &serval.StatusError{Status: 501, Msg: "proxy: CONNECT is not proxied"}
	errHeadTooLarge      = &serval.StatusError{Status: 431, Msg: "proxy: request head too large to forward"}
	errTooManyFields     = &serval.StatusError{Status: 431, Msg: "proxy: request has more fields than this proxy forwards (proxy.Config.FieldsMax)"}
	errBodyTooLarge      = &serval.StatusError{Status: 413, Msg: "proxy: request body too large"}
	errChunkTooLarge     = &serval.StatusError{Status: 400, Msg: "proxy: chunk framing does not fit the buffer"}
	errUpstreamBody      = &serval.StatusError{Status: 502, Msg: "proxy: upstream response body truncated or failed"}
	errUpstreamBodyStall = &serval.StatusError{Status: 504, Msg: "proxy: the upstream stopped reading the request body and did not answer"}
	errUpstreamChunk     = &serval.StatusError{Status: 502, Msg: "proxy: invalid chunked response body"}
	// A chunked response body whose framing is valid but over our limits
	// (a chunk extension or a trailer section longer than we take):
	// http1.ResponseLimit's kind, which passive health does not count.
	errUpstreamChunkLimit = &serval.StatusError{Status: 502, Msg: "proxy: chunked response body over this proxy's limits (chunk extension or trailer section)"}
	errClientWrite        = &serval.StatusError{Status: 502, Msg: "proxy: writing to the client failed"}
	errPumpStopped        = &serval.StatusError{Status: 502, Msg: "proxy: request body pump stopped"}
	errClientBodyCut      = &serval.StatusError{Status: 400, Msg: "proxy: the client's request body ended early or failed"}
	errClientBodyStall    = &serval.StatusError{Status: 408, Msg: "proxy: the client's request body stalled"}
	errPumpPanic          = &serval.StatusError{Status: 500, Msg: "proxy: panic while sending the request body"}
	errUpstreamResponse   = &serval.StatusError{Status: 502, Msg: "proxy: invalid upstream response"}
	errBadOutbound        = &serval.StatusError{Status: 500, Msg: "proxy: a hook left a request head that is not valid HTTP"}
	errLengthRequired     = &serval.StatusError{Status: 411, Msg: "proxy: a chunked request body still arriving cannot go to an HTTP/1.0 upstream"}
)

// isTimeout reports whether err is a deadline's.
func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// clientBodyErr is the error a client gets for its body failing on its
// side: the pump's own when it carries a status (a hook's refusal, 413),
// else 408 for a stall and 400 for a body cut short or unreadable (the
// client's doing, never the 502 of a bad upstream).
func clientBodyErr(err error) error {
	if _, ok := err.(*serval.StatusError); ok {
		return err
	}
	if isTimeout(err) {
		return errClientBodyStall
	}
	return errClientBodyCut
}

// clientBodyFail is clientBodyErr for the pump's failure err, kept as the
// exchange's cause (a reset, an early end, a stall) for the error line.
func (s *Session) clientBodyFail(err error) error {
	if _, ok := err.(*serval.StatusError); !ok {
		s.cause = err
	}
	return clientBodyErr(err)
}

// statusOf is the status an error maps to (fallback when not a
// *StatusError, e.g. a hook's plain error).
func statusOf(err error, fallback int) int {
	switch e := err.(type) {
	case *serval.StatusError:
		return e.Status
	case *client.DialError:
		return e.Status
	}
	return fallback
}

// writeError answers status with a short text body. close adds
// "Connection: close". It reports whether the write succeeded.
func (s *Session) writeError(status int, close bool) bool {
	text := http1.StatusText(status)
	b := http1.AppendStatusLine(s.wbuf[:0], status, nil)
	b = http1.AppendField(b, nameDate, s.date.Get(serval.Now()))
	b = http1.AppendField(b, nameCType, valueText)
	b = appendContentLength(b, int64(len(text)+1))
	if status == 503 {
		// No upstream, or every one at its connection cap: a brief
		// condition, worth a retry soon (RFC 9110 §10.2.3).
		b = http1.AppendField(b, nameRetryAfter, valueOneSecond)
	}
	if close {
		b = http1.AppendField(b, nameConn, valueClose)
	} else if s.req.Version == serval.Version10 {
		b = http1.AppendField(b, nameConn, valueKeep)
	}
	b = append(b, "\r\n"...)
	if s.req.MethodID != serval.MethodHead {
		b = append(b, text...)
		b = append(b, '\n')
	}
	s.wbuf = b[:0]
	return s.writeClient(b)
}

// actionInternalError is the 500 that replaces a hook's response the
// proxy cannot send (an unknown kind, a bad status, an unsafe field).
var actionInternalError = serval.Respond(500, "text/plain; charset=utf-8", []byte("Internal Server Error\n"))

// writeAction sends a handler's direct response (OnError's ErrorRespond,
// or OnResponse's replacement). As the server does for OnRequest's, it
// answers 500 instead of an action that is not an ActionRespond or
// ActionReject with a final status (a zero Action, a Continue, a status
// out of [200, 999]): a hook's mistake must not reach the client as a
// 200 with an empty body. A Reject's reason goes as text/plain, and a 204
// or 304 goes without body or Content-Length (RFC 9110 §6.4.1): a body
// there would be read as the start of the next response.
func (s *Session) writeAction(a *serval.Action, close bool) bool {
	s.reason = a.Reason // the hook's note, for LogEntry.Reason, kept on a 500 too
	if a.Kind != serval.ActionRespond && a.Kind != serval.ActionReject || a.Status < 200 || a.Status > 999 {
		s.f.log.Error("proxy: a hook's response is not a Respond or Reject action with a status in [200, 999]; answering 500",
			"kind", int(a.Kind), "status", a.Status, "id", s.x.ID)
		a = &actionInternalError
	}
	if !http1.SafeValue(a.ContentType) || !safeFields(a.Headers) {
		s.f.log.Error("proxy: a hook's response has a field or content type that is not valid HTTP (a control byte, CR or LF would split the head); answering 500", "id", s.x.ID)
		a = &actionInternalError
	}
	status := a.Status
	body, contentType := a.Body, a.ContentType
	if a.Kind == serval.ActionReject {
		contentType = "text/plain; charset=utf-8"
		if body == nil {
			body = s.appendString(a.Reason)
		}
	}
	// 204 and 304 have no content and no length; 205 has none either
	// (RFC 9110 §15.3.6), with Content-Length: 0 as the server's does.
	noBody := status == 204 || status == 304
	if noBody || status == 205 {
		body = nil
	}
	b := http1.AppendStatusLine(s.wbuf[:0], status, nil)
	if fieldCount(a.Headers, "date") == 0 { // a hook's Date replaces ours: one Date only
		b = http1.AppendField(b, nameDate, s.date.Get(serval.Now()))
	}
	if contentType != "" {
		b = append(b, "Content-Type: "...)
		b = append(b, contentType...)
		b = append(b, "\r\n"...)
	}
	for _, h := range a.Headers {
		if hopByHop(h.Name) || serval.EqualFold(h.Name, "content-length") {
			continue
		}
		b = http1.AppendField(b, h.Name, h.Value)
	}
	if !noBody {
		b = appendContentLength(b, int64(len(body)))
	}
	if close || a.Close {
		b = http1.AppendField(b, nameConn, valueClose)
	} else if s.req.Version == serval.Version10 {
		b = http1.AppendField(b, nameConn, valueKeep)
	}
	b = append(b, "\r\n"...)
	s.wbuf = b[:0]
	s.x.Status = status
	if !s.writeClient(b) {
		return false
	}
	if s.req.MethodID != serval.MethodHead && len(body) > 0 {
		return s.writeClient(body)
	}
	return true
}

// appendString copies str into the scratch (rare paths only).
func (s *Session) appendString(str string) []byte {
	start := len(s.scratch)
	if start+len(str) > cap(s.scratch) {
		return nil
	}
	s.scratch = append(s.scratch, str...)
	return s.scratch[start:]
}

func appendContentLength(b []byte, n int64) []byte {
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, "\r\n"...)
}

// logError reports a failed exchange; guarded so the disabled level costs
// nothing.
func (s *Session) logError(perr *serval.ProxyError) {
	l := s.f.log
	if !l.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	up := ""
	if perr.Upstream != nil {
		up = perr.Upstream.Addr()
	}
	level := slog.LevelWarn
	if perr.Err == errClientGone || perr.Err == errClientReset || perr.Err == errClientLeft || perr.Err == errCut || perr.Phase == serval.PhaseClientWrite || perr.Phase == serval.PhaseClientBody {
		level = slog.LevelInfo // the client's doing, and common
	}
	if s.cause != nil {
		// The I/O error behind a mapped one (a TLS alert after the
		// handshake, a reset): what an operator needs to tell why.
		l.LogAttrs(context.Background(), level, "proxy: exchange failed",
			slog.String("phase", perr.Phase.String()), slog.Int("status", perr.Status),
			slog.String("upstream", up), slog.Any("err", perr.Err), slog.Any("cause", s.cause), slog.Uint64("id", s.x.ID))
		return
	}
	l.LogAttrs(context.Background(), level, "proxy: exchange failed",
		slog.String("phase", perr.Phase.String()), slog.Int("status", perr.Status),
		slog.String("upstream", up), slog.Any("err", perr.Err), slog.Uint64("id", s.x.ID))
}

// logCause keeps the I/O error behind a response-head failure for the
// exchange's error line (the ProxyError carries the mapped value), and
// logs it at debug level: an attempt that is retried has no error line.
func (s *Session) logCause(cause error) {
	s.cause = cause
	l := s.f.log
	if cause == nil || !l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	l.LogAttrs(context.Background(), slog.LevelDebug, "proxy: upstream read failed", slog.Any("err", cause), slog.Uint64("id", s.x.ID))
}
