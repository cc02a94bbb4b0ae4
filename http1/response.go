package http1

import "github.com/servalproxy/serval"

// ParseResponse parses a response head at the start of buf into resp, as
// ParseRequest (no leading empty lines: RFC 9112 §2.2 allows skipping
// them only before a request). Errors are *serval.StatusError with Status
// 502: an invalid response is never forwarded. A nil lim means
// DefaultLimits; TargetBytesMax is unused.
func ParseResponse(buf []byte, resp *serval.Response, lim *Limits) (int, error) {
	resp.Reset()
	headMax, _ := limitsOf(lim)
	win := buf
	if len(win) > headMax {
		win = win[:headMax]
	}
	n, err := parseStatusLine(win, resp)
	if err == nil {
		n, err = parseFields(win, n, &resp.Fields)
	}
	if err == ErrIncomplete && len(buf) >= headMax {
		err = ErrHeadTooLarge
	}
	if err == nil {
		err = interpretResponse(resp)
	}
	if err != nil {
		resp.Reset()
		return 0, responseError(err)
	}
	resp.HeadBytes = n
	return n, nil
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT [SP reason] CRLF"; the SP
// before an empty reason may be missing (servers differ).
func parseStatusLine(win []byte, resp *serval.Response) (int, error) {
	const prefix = "HTTP/1.x "
	pos := 0
	for ; pos < len(prefix); pos++ {
		if pos == len(win) {
			return 0, ErrIncomplete
		}
		c, want := win[pos], prefix[pos]
		if c != want && !(want == 'x' && (c == '0' || c == '1')) {
			return 0, ErrBadStatusLine
		}
	}
	resp.Version = serval.Version(10 + win[7] - '0')
	for ; pos < len(prefix)+3; pos++ {
		if pos == len(win) {
			return 0, ErrIncomplete
		}
		c := win[pos]
		if !isDigit(c) || pos == len(prefix) && c == '0' {
			return 0, ErrBadStatusLine
		}
		resp.Status = resp.Status*10 + int(c-'0')
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	if win[pos] == ' ' {
		pos++
		start := pos
		for pos < len(win) && charClass[win[pos]]&cValue != 0 {
			pos++
		}
		resp.Reason = win[start:pos]
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	if win[pos] != '\r' {
		return 0, lineError(win[pos], ErrBadStatusLine)
	}
	if pos+1 == len(win) {
		return 0, ErrIncomplete
	}
	if win[pos+1] != '\n' {
		return 0, ErrBareCR
	}
	return pos + 2, nil
}

// interpretResponse applies the framing rules to a complete head.
func interpretResponse(resp *serval.Response) error {
	fr := framing{contentLength: -1}
	for i := range resp.Fields {
		if _, err := fr.field(&resp.Fields[i]); err != nil {
			return err
		}
	}
	if err := fr.check(resp.Version); err != nil {
		return err
	}
	resp.ContentLength = fr.contentLength
	resp.Chunked = fr.te
	resp.Close = fr.close || resp.Version == serval.Version10 && !fr.keepAlive
	return nil
}

// ResponseBody tells the framing of a parsed response's body given the
// request method it answers (RFC 9112 §6.3): none for HEAD, 1xx, 204, 304
// and a 2xx to CONNECT (a tunnel follows, not a body), and none for
// Content-Length: 0; else chunked, length, or until the connection closes.
func ResponseBody(resp *serval.Response, reqMethod serval.Method) BodyKind {
	s := resp.Status
	switch {
	case reqMethod == serval.MethodHead, s < 200, s == 204, s == 304:
		return BodyNone
	case reqMethod == serval.MethodConnect && s < 300:
		return BodyNone
	case resp.Chunked:
		return BodyChunked
	case resp.ContentLength > 0:
		return BodyLength
	case resp.ContentLength == 0:
		return BodyNone
	}
	return BodyClose
}
