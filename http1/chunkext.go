package http1

import "github.com/servalproxy/serval"

// States of the chunk-extension scanner, for
//
//	chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-val = token / quoted-string
//
// (RFC 9112 §7.1.1). Whitespace is allowed around ';' and '=' but not
// before the CR: "BWS" only ever precedes one of them.
const (
	extEnd        uint8 = iota // after size, name or value: ';', WS or CR
	extWS                      // after whitespace: ';', '=' (if afterName) or more WS
	extNameStart               // after ';': WS or a name
	extName                    // inside a name
	extValueStart              // after '=': WS, a token or '"'
	extToken                   // inside a token value
	extQuoted                  // inside a quoted string
	extQuotedPair              // after a backslash in a quoted string
)

// scanChunkExt validates the extensions of a size line from b[i:], the
// byte after the size digits. It returns the index of the CR, 0 when the
// line is not complete yet, or an error as soon as the bytes cannot be a
// valid line (bad grammar or more than ChunkExtensionBytesMax bytes).
func scanChunkExt(b []byte, i int) (int, error) {
	state, afterName := extEnd, false
	for pos := i; pos < len(b); pos++ {
		c := b[pos]
		if c == '\n' {
			return 0, ErrBareLF
		}
		if pos-i >= serval.ChunkExtensionBytesMax && !(c == '\r' && endState(state)) {
			return 0, ErrChunkExtTooLong
		}
		if c == '\r' && endState(state) {
			return pos, nil
		}
		var ok bool
		state, afterName, ok = extStep(state, afterName, c)
		if !ok {
			return 0, ErrBadChunkExt
		}
	}
	return 0, nil
}

// endState reports whether a CR may end the line in this state.
func endState(s uint8) bool { return s == extEnd || s == extName || s == extToken }

// extStep advances the scanner by one byte (not CR or LF in an end
// state); ok false means the byte is not allowed here.
func extStep(s uint8, afterName bool, c byte) (uint8, bool, bool) {
	tchar := charClass[c]&cTchar != 0
	switch s {
	case extEnd, extWS:
		switch {
		case c == ';':
			return extNameStart, false, true
		case isOWS(c):
			return extWS, afterName, true
		case c == '=' && afterName:
			return extValueStart, false, true
		}
	case extNameStart:
		switch {
		case isOWS(c):
			return extNameStart, false, true
		case tchar:
			return extName, false, true
		}
	case extName:
		switch {
		case tchar:
			return extName, false, true
		case c == '=':
			return extValueStart, false, true
		case c == ';':
			return extNameStart, false, true
		case isOWS(c):
			return extWS, true, true
		}
	case extValueStart:
		switch {
		case isOWS(c):
			return extValueStart, false, true
		case c == '"':
			return extQuoted, false, true
		case tchar:
			return extToken, false, true
		}
	case extToken:
		switch {
		case tchar:
			return extToken, false, true
		case c == ';':
			return extNameStart, false, true
		case isOWS(c):
			return extWS, false, true
		}
	case extQuoted:
		switch {
		case c == '"':
			return extEnd, false, true
		case c == '\\':
			return extQuotedPair, false, true
		case charClass[c]&cQdtext != 0:
			return extQuoted, false, true
		}
	case extQuotedPair:
		if charClass[c]&cValue != 0 {
			return extQuoted, false, true
		}
	}
	return s, afterName, false
}
