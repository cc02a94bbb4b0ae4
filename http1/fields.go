package http1

import (
	"math"

	"github.com/servalproxy/serval"
)

// parseFields parses the field lines of a head from win[pos:] through the
// empty line that ends it, appending to *fields up to its capacity. It
// returns the position after the final CRLF. Errors are the request
// variants; ParseResponse maps them to 502.
//
// Each byte is checked as it is reached, so a defect is reported as soon
// as it is in win, and ErrIncomplete only when win ends on a prefix that
// could still be valid.
func parseFields(win []byte, pos int, fields *[]serval.Header) (int, error) {
	for {
		if pos >= len(win) {
			return 0, ErrIncomplete
		}
		switch win[pos] {
		case '\r':
			if pos+1 >= len(win) {
				return 0, ErrIncomplete
			}
			if win[pos+1] != '\n' {
				return 0, ErrBareCR
			}
			return pos + 2, nil
		case '\n':
			return 0, ErrBareLF
		case ' ', '\t':
			// A line starting with whitespace continues the previous
			// one (obs-fold, RFC 9112 §5.2): rejected, since peers
			// disagree on how to unfold it.
			return 0, ErrObsFold
		}
		if len(*fields) == cap(*fields) {
			return 0, ErrTooManyFields
		}
		var f serval.Header
		var err error
		if pos, err = parseFieldLine(win, pos, &f); err != nil {
			return 0, err
		}
		*fields = append(*fields, f)
	}
}

// parseFieldLine parses one "name: value CRLF" line at win[pos:] into f and
// returns the position after its CRLF.
func parseFieldLine(win []byte, pos int, f *serval.Header) (int, error) {
	start := pos
	for pos < len(win) && charClass[win[pos]]&cTchar != 0 {
		pos++
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	// Whitespace between name and colon is forbidden (RFC 9112 §5.1):
	// some peers strip it, some keep it in the name.
	if win[pos] != ':' || pos == start {
		return 0, ErrBadFieldName
	}
	f.Name = win[start:pos]
	pos++
	for pos < len(win) && isOWS(win[pos]) {
		pos++
	}
	start = pos
	for pos < len(win) && charClass[win[pos]]&cValue != 0 {
		pos++
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	switch win[pos] {
	case '\r':
	case '\n':
		return 0, ErrBareLF
	default:
		return 0, ErrBadFieldValue
	}
	if pos+1 == len(win) {
		return 0, ErrIncomplete
	}
	if win[pos+1] != '\n' {
		return 0, ErrBareCR
	}
	f.Value = trimOWS(win[start:pos])
	return pos + 2, nil
}

// framing gathers the fields that frame a message and manage its
// connection, shared by requests and responses.
type framing struct {
	contentLength int64 // -1 when absent
	te            bool  // a Transfer-Encoding field was seen
	chunkedCount  int   // how many times chunked was listed
	lastChunked   bool  // the last coding listed is chunked
	otherCoding   bool  // a coding other than chunked was listed
	close         bool  // Connection lists close
	keepAlive     bool  // Connection lists keep-alive
	upgradeToken  bool  // Connection lists upgrade
	upgradeField  bool  // an Upgrade field is present
}

// field looks at one field and reports whether it was a framing field,
// with an error for an invalid one. Dispatch is on the name length first
// so most fields cost one switch.
func (fr *framing) field(f *serval.Header) (bool, error) {
	switch len(f.Name) {
	case 7:
		if serval.EqualFold(f.Name, "upgrade") {
			fr.upgradeField = true
			return true, nil
		}
	case 10:
		if serval.EqualFold(f.Name, "connection") {
			fr.connection(f.Value)
			return true, nil
		}
	case 14:
		if serval.EqualFold(f.Name, "content-length") {
			return true, fr.length(f.Value)
		}
	case 17:
		if serval.EqualFold(f.Name, "transfer-encoding") {
			return true, fr.codings(f.Value)
		}
	}
	return false, nil
}

func (fr *framing) connection(v []byte) {
	it := NewTokenIter(v)
	for t, ok := it.Next(); ok; t, ok = it.Next() {
		switch {
		case serval.EqualFold(t, "close"):
			fr.close = true
		case serval.EqualFold(t, "keep-alive"):
			fr.keepAlive = true
		case serval.EqualFold(t, "upgrade"):
			fr.upgradeToken = true
		}
	}
}

// length parses a Content-Length value: 1*DIGIT, or a comma list of
// identical values (RFC 9112 §6.3 lets a recipient accept those), and
// every Content-Length field must agree with the ones before it.
func (fr *framing) length(v []byte) error {
	for {
		elem, rest, more := v, []byte(nil), false
		for i, c := range v {
			if c == ',' {
				elem, rest, more = v[:i], v[i+1:], true
				break
			}
		}
		n, ok := parseDecimal(trimOWS(elem))
		if !ok || fr.contentLength >= 0 && n != fr.contentLength {
			return ErrBadLength
		}
		fr.contentLength = n
		if !more {
			return nil
		}
		v = rest
	}
}

// parseDecimal parses 1*DIGIT into an int64, false on anything else or on
// overflow.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// codings takes one Transfer-Encoding field; all of them form one list.
func (fr *framing) codings(v []byte) error {
	fr.te = true
	it := NewTokenIter(v)
	for t, ok := it.Next(); ok; t, ok = it.Next() {
		if !ValidFieldName(t) {
			// Not a bare token (parameters, spaces): we implement no
			// coding that takes parameters, and a malformed list is
			// where parsers disagree.
			return ErrBadTE
		}
		fr.lastChunked = serval.EqualFold(t, "chunked")
		if fr.lastChunked {
			fr.chunkedCount++
		} else {
			fr.otherCoding = true
		}
	}
	return nil
}

// check applies the framing rules of RFC 9112 §6 once every field is
// seen: Transfer-Encoding must end in chunked exactly once and exclude
// Content-Length, and HTTP/1.0 messages must not use it.
func (fr *framing) check(v serval.Version) error {
	if !fr.te {
		return nil
	}
	switch {
	case fr.contentLength >= 0:
		return ErrLengthAndTE
	case v == serval.Version10:
		return ErrTEVersion
	case fr.chunkedCount != 1 || !fr.lastChunked:
		return ErrBadTE
	case fr.otherCoding:
		return ErrTENotSupported
	}
	return nil
}
