package server

import (
	"errors"
	"log/slog"

	"github.com/servalproxy/serval"
)

// Errors the server answers with. Package-level values: returning one
// never allocates.
var (
	errBadRequest    = &serval.StatusError{Status: 400, Msg: "server: bad request"}
	errHeadTooLarge  = &serval.StatusError{Status: 431, Msg: "server: request head too large"}
	errHeadTimeout   = &serval.StatusError{Status: 408, Msg: "server: request head timeout"}
	errConnect       = &serval.StatusError{Status: 501, Msg: "server: CONNECT not supported"}
	errBodyTooLarge  = &serval.StatusError{Status: 413, Msg: "server: request body too large"}
	errBodyTimeout   = &serval.StatusError{Status: 408, Msg: "server: request body timeout"}
	errBodyTruncated = &serval.StatusError{Status: 400, Msg: "server: request body truncated"}
	errBodyFraming   = &serval.StatusError{Status: 400, Msg: "server: bad request body framing"}
	errBodyConsumed  = &serval.StatusError{Status: 500, Msg: "server: handler read the body and returned Continue"}
	errBadAction     = &serval.StatusError{Status: 500, Msg: "server: unknown action kind"}
	errBadStatus     = &serval.StatusError{Status: 500, Msg: "server: action status not in [200, 999]"}
	errNoStreamer    = &serval.StatusError{Status: 500, Msg: "server: stream action without NextChunk"}
	errBadChunk      = &serval.StatusError{Status: 500, Msg: "server: NextChunk length out of range"}
	errStreamChunks  = &serval.StatusError{Status: 500, Msg: "server: stream exceeded StreamChunksMax"}
	errStreamLength  = &serval.StatusError{Status: 500, Msg: "server: stream length differs from ContentLength"}
	errHeadOverflow  = &serval.StatusError{Status: 500, Msg: "server: response head exceeds half the write buffer"}
	errBadField      = &serval.StatusError{Status: 500, Msg: "server: a handler's response field or content type holds CR, LF or another control byte"}
	errPanic         = &serval.StatusError{Status: 500, Msg: "server: panic in handler"}
	errNoUpstream    = &serval.StatusError{Status: 503, Msg: "server: no upstream available"}
	errBadGateway    = &serval.StatusError{Status: 502, Msg: "server: upstream failed"}
	errGatewayTime   = &serval.StatusError{Status: 504, Msg: "server: upstream timed out"}
	// errShutdownCut is the error of a request the shutdown's hard stop
	// (ShutdownTimeout) cut.
	errShutdownCut = errors.New("server: cut at the shutdown deadline (ShutdownTimeout)")
	// errStreamClientGone ends a stream whose client reset the connection.
	errStreamClientGone = errors.New("server: the client reset the connection during the stream")
)

const levelError = slog.LevelError

// statusError returns err as a *serval.StatusError, or def. A
// *serval.ProxyError maps by its status onto the package's own values.
func statusError(err error, def *serval.StatusError) *serval.StatusError {
	switch e := err.(type) {
	case *serval.StatusError:
		return e
	case *serval.ProxyError:
		switch e.Status {
		case 503:
			return errNoUpstream
		case 504:
			return errGatewayTime
		}
	}
	return def
}
