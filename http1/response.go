package http1

import "github.com/servalproxy/serval"

// ParseResponse parses a response head at the start of buf into resp, as
// ParseRequest. Like a request, it may follow a few empty lines: RFC 9112
// §2.2 asks this only of servers, but servers do send a stray CRLF after
// a body or an interim response, and an empty line cannot smuggle
// anything. Errors are *serval.StatusError with Status
// 502: an invalid response is never forwarded. A nil lim means
// DefaultLimits; TargetBytesMax is unused.
func ParseResponse(buf []byte, resp *serval.Response, lim *Limits) (int, error) {
	resp.Reset()
	headMax, _ := limitsOf(lim)
	win := buf
	if len(win) > headMax {
		win = win[:headMax]
	}
	rules := fieldRules{framing: framing{contentLength: -1}}
	n, err := parseResponseHead(win, resp, &rules)
	if err == ErrIncomplete && len(buf) >= headMax {
		err = ErrHeadTooLarge
	}
	if err == nil {
		err = rules.check()
	}
	if err != nil {
		resp.Reset()
		return 0, responseError(err)
	}
	resp.ContentLength = rules.contentLength
	resp.Chunked = rules.te
	resp.Close = rules.close || resp.Version == serval.Version10 && !rules.keepAlive
	resp.HeadBytes = n
	return n, nil
}

func parseResponseHead(win []byte, resp *serval.Response, rules *fieldRules) (int, error) {
	pos, err := skipEmptyLines(win)
	if err != nil {
		return 0, err
	}
	if pos, err = parseStatusLine(win, pos, resp); err != nil {
		return 0, err
	}
	rules.version = resp.Version
	return parseFields(win, pos, &resp.Fields, rules)
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT [SP reason] CRLF"; the SP
// before an empty reason may be missing (servers differ). A minor version
// above 1 is taken as 1.1, the highest we conform to (RFC 9110 §2.5).
func parseStatusLine(win []byte, pos int, resp *serval.Response) (int, error) {
	const prefix = "HTTP/1.x "
	start := pos
	for ; pos-start < len(prefix); pos++ {
		if pos == len(win) {
			return 0, ErrIncomplete
		}
		c, want := win[pos], prefix[pos-start]
		if want == 'x' && !isDigit(c) || want != 'x' && c != want {
			return 0, ErrBadStatusLine
		}
	}
	resp.Version = serval.Version11
	if win[start+7] == '0' {
		resp.Version = serval.Version10
	}
	for ; pos-start < len(prefix)+3; pos++ {
		if pos == len(win) {
			return 0, ErrIncomplete
		}
		c := win[pos]
		// 100 to 599: RFC 9110 §15 makes other values invalid (a
		// recipient treats them as a 5xx; a proxy answers 502).
		if !isDigit(c) || pos-start == len(prefix) && (c == '0' || c > '5') {
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
