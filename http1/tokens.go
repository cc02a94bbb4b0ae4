package http1

import "github.com/servalproxy/serval"

// Byte classes, one bit each in charClass. A table lookup per byte is the
// cheapest exact check: the grammar of every element is a set of bytes.
const (
	cTchar   uint8 = 1 << iota // token character, RFC 9110 §5.6.2
	cTarget                    // request-target byte: VCHAR (0x21-0x7E) but '#'
	cValue                     // field-value byte: VCHAR, SP, HTAB, obs-text
	cRegName                   // reg-name byte, RFC 3986: unreserved / sub-delims
	cHex                       // hex digit
	cQdtext                    // quoted-string text: qdtext of RFC 9110 §5.6.4
)

var charClass = func() (t [256]uint8) {
	const tchars = "!#$%&'*+-.^_`|~"
	const subDelims = "!$&'()*+,;="
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || contains(tchars, b) {
			t[c] |= cTchar
		}
		if 0x21 <= b && b <= 0x7e {
			t[c] |= cValue
			// '#' starts a fragment, which a request never carries (RFC
			// 9112 §3.2: origin-form is absolute-path ["?" query], and
			// absolute-URI has no fragment). Passed on, it would split
			// what the next hop routes on from what a path rule here
			// matched (the bypass behind HAProxy's CVE-2023-45539).
			if b != '#' {
				t[c] |= cTarget
			}
		}
		if b == ' ' || b == '\t' || b >= 0x80 {
			t[c] |= cValue
		}
		if alnum || contains("-._~", b) || contains(subDelims, b) {
			t[c] |= cRegName
		}
		if '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			t[c] |= cHex
		}
		if b == '\t' || b == ' ' || b == 0x21 || 0x23 <= b && b <= 0x5b || 0x5d <= b && b <= 0x7e || b >= 0x80 {
			t[c] |= cQdtext
		}
	}
	return t
}()

func contains(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}

// ValidFieldName reports whether name is a valid field name (a non-empty
// token). The writers trust their input; callers that build fields from
// untrusted data check them with this and ValidFieldValue first.
func ValidFieldName(name []byte) bool { return len(name) > 0 && allOf(name, cTchar) }

// ValidFieldValue reports whether value is a valid field value: no CTLs
// except HTAB, no leading or trailing whitespace.
func ValidFieldValue(value []byte) bool {
	n := len(value)
	return allOf(value, cValue) && (n == 0 || !isOWS(value[0]) && !isOWS(value[n-1]))
}

// SafeField reports whether a field built by a handler (not parsed) can
// be written as is: its name a token, its value free of CR, LF, NUL and
// every other control byte but HTAB. Leading or trailing whitespace is
// allowed (a recipient trims it). A field that fails would split the
// head: a header injected by whoever controls the value.
func SafeField[N, V ~string | ~[]byte](name N, value V) bool {
	return len(name) > 0 && allOf(name, cTchar) && allOf(value, cValue)
}

// SafeValue is SafeField's test of a value.
func SafeValue[V ~string | ~[]byte](value V) bool { return allOf(value, cValue) }

// SafeTarget reports whether a request-target built by a handler (a
// rewritten path) can be written as is: not empty, and every byte
// visible ASCII other than '#' (no space, control or 8-bit byte).
func SafeTarget(target []byte) bool { return len(target) > 0 && allOf(target, cTarget) }

// allOf reports whether every byte of b is of class.
func allOf[T ~string | ~[]byte](b T, class uint8) bool {
	for i := 0; i < len(b); i++ {
		if charClass[b[i]]&class == 0 {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// trimOWS drops leading and trailing SP and HTAB.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// TokenIter iterates the comma-separated elements of a list field value
// (Connection, Transfer-Encoding, TE), trimmed of OWS, empty elements
// skipped (RFC 9110 §5.6.1). It does not interpret quoted strings: the
// lists it is used for hold tokens only.
type TokenIter struct {
	rest []byte
}

// NewTokenIter returns an iterator over value's tokens.
func NewTokenIter(value []byte) TokenIter { return TokenIter{rest: value} }

// Next returns the next token, false at the end.
func (it *TokenIter) Next() ([]byte, bool) {
	for len(it.rest) > 0 {
		elem := it.rest
		it.rest = nil
		for i, c := range elem {
			if c == ',' {
				elem, it.rest = elem[:i], elem[i+1:]
				break
			}
		}
		if elem = trimOWS(elem); len(elem) > 0 {
			return elem, true
		}
	}
	return nil, false
}

// HasToken reports whether the list value contains token (case-insensitive).
func HasToken(value []byte, token string) bool {
	it := NewTokenIter(value)
	for {
		t, ok := it.Next()
		if !ok {
			return false
		}
		if serval.EqualFold(t, token) {
			return true
		}
	}
}
