package http1

import (
	"errors"

	"github.com/servalproxy/serval"
)

// Limits bounds a head. The field-count limit is cap(req.Fields) /
// cap(resp.Fields), set by Init.
type Limits struct {
	// HeadBytesMax bounds the whole head (431 for requests above it).
	HeadBytesMax int
	// TargetBytesMax bounds the request-target (414 above it).
	TargetBytesMax int
}

// DefaultLimits returns the limits of serval's *Default constants.
func DefaultLimits() Limits {
	return Limits{HeadBytesMax: serval.HeadBytesMaxDefault, TargetBytesMax: serval.TargetBytesMaxDefault}
}

// ErrIncomplete means buf holds a proper prefix of a head that may still be
// valid: read more and call again.
var ErrIncomplete = errors.New("http1: incomplete head")

// leadingEmptyLinesMax bounds the empty lines (CRLF) skipped before a
// request line. RFC 9112 §2.2 asks servers to ignore at least one (some
// clients send a CRLF after a POST body); a few cover every real client
// without letting a peer feed us empty lines forever.
const leadingEmptyLinesMax = 4

// limitsOf returns the head and target bounds, the defaults for a nil or
// non-positive value (a zero Limits is a caller that did not care).
func limitsOf(lim *Limits) (headMax, targetMax int) {
	headMax, targetMax = serval.HeadBytesMaxDefault, serval.TargetBytesMaxDefault
	if lim != nil {
		if lim.HeadBytesMax > 0 {
			headMax = lim.HeadBytesMax
		}
		if lim.TargetBytesMax > 0 {
			targetMax = lim.TargetBytesMax
		}
	}
	return headMax, targetMax
}
