package http1

import (
	"math"

	"github.com/servalproxy/serval"
)

// parseFields parses the field lines of a head from win[pos:] through the
// empty line that ends it, appending to *fields up to its capacity and
// judging each field by rules as soon as its line is complete. It
// returns the position after the final CRLF. Errors are the request
// variants; ParseResponse maps them to 502.
//
// Each byte is checked as it is reached, so a defect is reported as soon
// as it is in win, and ErrIncomplete only when win ends on a prefix that
// could still be valid.
func parseFields(win []byte, pos int, fields *[]serval.Header, rules *fieldRules) (int, error) {
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
		if err = rules.field(&f); err != nil {
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
// connection, shared by requests and responses. Each field is judged as
// soon as its line is complete, so a defect is reported before the rest
// of the head arrives; check finishes the rules that need every field.
type framing struct {
	version       serval.Version
	contentLength int64 // -1 when absent
	te            bool  // a Transfer-Encoding field was seen
	lastChunked   bool  // the last coding listed is chunked
	otherCoding   bool  // a coding other than chunked was listed
	close         bool  // Connection lists close
	keepAlive     bool  // Connection lists keep-alive
	upgradeToken  bool  // Connection lists upgrade
	upgradeField  bool  // an Upgrade field names a protocol
}

// field looks at one field and reports whether it was a framing field,
// with an error for an invalid one. Dispatch is on the name length first
// so most fields cost one switch.
func (fr *framing) field(f *serval.Header) (bool, error) {
	switch len(f.Name) {
	case 7:
		if serval.EqualFold(f.Name, "upgrade") {
			// An Upgrade naming no protocol ("", ",") offers nothing.
			fr.upgradeField = fr.upgradeField || listHasMember(f.Value)
			return true, nil
		}
	case 10:
		if serval.EqualFold(f.Name, "connection") {
			fr.connection(f.Value)
			return true, nil
		}
	case 14:
		if serval.EqualFold(f.Name, "content-length") {
			if fr.te {
				return true, ErrLengthAndTE
			}
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

// codings takes one Transfer-Encoding field; all of them form one list
// (RFC 9112 §6.1). Whatever follows chunked is an error (a second chunked,
// or a final coding that is not chunked), and chunked after any other
// coding asks us to decode something we do not implement (501). HTTP/1.0
// messages must not carry the field at all: its framing is faulty.
func (fr *framing) codings(v []byte) error {
	fr.te = true
	if fr.version == serval.Version10 {
		return ErrTEVersion
	}
	if fr.contentLength >= 0 {
		return ErrLengthAndTE
	}
	it := NewTokenIter(v)
	for t, ok := it.Next(); ok; t, ok = it.Next() {
		if fr.lastChunked || !ValidFieldName(t) {
			// After chunked, or not a bare token (parameters, spaces):
			// we implement no coding that takes parameters, and a
			// malformed list is where parsers disagree.
			return ErrBadTE
		}
		fr.lastChunked = serval.EqualFold(t, "chunked")
		if !fr.lastChunked {
			fr.otherCoding = true
		} else if fr.otherCoding {
			return ErrTENotSupported
		}
	}
	return nil
}

// check applies the framing rules that need every field: a
// Transfer-Encoding must end in chunked (RFC 9112 §6.3).
func (fr *framing) check() error {
	if fr.te && !fr.lastChunked {
		return ErrBadTE
	}
	return nil
}

// fieldRules judges each field of a head as it is parsed: framing for
// both kinds of message, Host and Expect for requests.
type fieldRules struct {
	framing
	request        bool
	hosts          int
	host           []byte
	expectContinue bool
	// badExpect: an Expect other than 100-continue; answered 417 only
	// once the rest of the head proved well formed (a malformed head is
	// a 400 whatever its Expect says).
	badExpect bool
}

func (r *fieldRules) field(f *serval.Header) error {
	known, err := r.framing.field(f)
	if err != nil || known || !r.request {
		return err
	}
	switch {
	case len(f.Name) == 4 && serval.EqualFold(f.Name, "host"):
		// RFC 9112 §3.2: a repeated Host or an invalid one is a 400.
		if r.hosts++; r.hosts > 1 {
			return ErrRepeatedHost
		}
		if !validAuthority(f.Value, false, true) {
			return ErrBadHost
		}
		r.host = f.Value
	case len(f.Name) == 6 && serval.EqualFold(f.Name, "expect"):
		r.expectation(f.Value)
	}
	return nil
}

// expectation accepts only 100-continue (RFC 9110 §10.1.1), and marks
// any other member for a 417 once the head is complete; HTTP/1.0 requests
// have their expectations ignored, as that section requires.
func (r *fieldRules) expectation(v []byte) {
	if r.version == serval.Version10 {
		return
	}
	n := 0
	it := NewTokenIter(v)
	for t, ok := it.Next(); ok; t, ok = it.Next() {
		if !serval.EqualFold(t, "100-continue") {
			r.badExpect = true
			return
		}
		n++
	}
	if n > 0 {
		r.expectContinue = true
	}
	// No member at all ("Expect:", "Expect: ,") is an empty list, no
	// expectation (RFC 9110 §5.6.1): the request is served as without
	// the field, as net/http, nginx and Apache do.
}

// listHasMember reports whether the list value v (RFC 9110 §5.6.1) has a
// non-empty member.
func listHasMember(v []byte) bool {
	for _, c := range v {
		if c != ',' && c != ' ' && c != '\t' {
			return true
		}
	}
	return false
}
