package http1

import "github.com/servalproxy/serval"

// The writers append to dst and never allocate when dst has room. They
// trust their input: a caller that builds fields from untrusted data
// checks them with ValidFieldName and ValidFieldValue first, since a CR or
// LF written here would split the head.

// AppendRequestHead appends "METHOD path HTTP/1.1\r\n", the fields and the
// final CRLF. Serval always speaks HTTP/1.1 upstream.
func AppendRequestHead(dst, method, path []byte, fields []serval.Header) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	return appendFields(dst, fields)
}

// AppendResponseHead appends "HTTP/1.1 status reason\r\n" (StatusText when
// reason is empty), the fields and the final CRLF.
func AppendResponseHead(dst []byte, status int, reason []byte, fields []serval.Header) []byte {
	dst = AppendStatusLine(dst, status, reason)
	return appendFields(dst, fields)
}

// AppendStatusLine appends "HTTP/1.1 status reason\r\n", with StatusText
// when reason is empty (and nothing after the SP when that is empty too,
// which the status-line grammar allows). status must be 100-999: anything
// else is a programmer error and panics.
func AppendStatusLine(dst []byte, status int, reason []byte) []byte {
	if status < 100 || status > 999 {
		panic("http1: status code out of range")
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10), ' ')
	if len(reason) == 0 {
		dst = append(dst, StatusText(status)...)
	} else {
		dst = append(dst, reason...)
	}
	return append(dst, '\r', '\n')
}

// AppendField appends "name: value\r\n".
func AppendField(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	dst = append(dst, value...)
	return append(dst, '\r', '\n')
}

func appendFields(dst []byte, fields []serval.Header) []byte {
	for i := range fields {
		dst = AppendField(dst, fields[i].Name, fields[i].Value)
	}
	return append(dst, '\r', '\n')
}

// AppendChunk appends data as one chunk (size line, data, CRLF); nothing
// for empty data, since an empty chunk would end the body.
func AppendChunk(dst, data []byte) []byte {
	if len(data) == 0 {
		return dst
	}
	dst = AppendChunkHeader(dst, len(data))
	dst = append(dst, data...)
	return append(dst, '\r', '\n')
}

// AppendChunkHeader appends the size line of an n-byte chunk: lowercase
// hex, no extensions. n must not be negative (panics).
func AppendChunkHeader(dst []byte, n int) []byte {
	if n < 0 {
		panic("http1: negative chunk size")
	}
	const hexDigits = "0123456789abcdef"
	shift := 0
	for m := n >> 4; m > 0; m >>= 4 {
		shift += 4
	}
	for ; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[n>>shift&0xf])
	}
	return append(dst, '\r', '\n')
}

// AppendLastChunk appends "0\r\n\r\n" (last chunk, no trailers).
func AppendLastChunk(dst []byte) []byte {
	return append(dst, "0\r\n\r\n"...)
}
