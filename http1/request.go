package http1

import "github.com/servalproxy/serval"

// ParseRequest parses the request head at the start of buf into req (which
// it Resets first). It returns the head length (leading empty lines and the
// final CRLF included) when the head is complete and valid, (0,
// ErrIncomplete) when more bytes are needed, or a *serval.StatusError whose
// Status is the answer (400, 414, 417, 431, 501, 505). It never allocates.
//
// A nil lim means DefaultLimits. The field-count limit is cap(req.Fields).
// After an error req holds no fields.
func ParseRequest(buf []byte, req *serval.Request, lim *Limits) (int, error) {
	req.Reset()
	headMax, targetMax := limitsOf(lim)
	win := buf
	if len(win) > headMax {
		win = win[:headMax]
	}
	rules := fieldRules{framing: framing{contentLength: -1}, request: true}
	n, err := parseRequestHead(win, req, targetMax, &rules)
	if err == ErrIncomplete && len(buf) >= headMax {
		// A complete head would need more than headMax bytes.
		err = ErrHeadTooLarge
	}
	if err == nil {
		err = finishRequest(req, &rules)
	}
	if err != nil {
		req.Reset()
		return 0, err
	}
	req.HeadBytes = n
	return n, nil
}

func parseRequestHead(win []byte, req *serval.Request, targetMax int, rules *fieldRules) (int, error) {
	pos, err := skipEmptyLines(win)
	if err != nil {
		return 0, err
	}
	if pos, err = parseRequestLine(win, pos, req, targetMax); err != nil {
		return 0, err
	}
	rules.version = req.Version
	return parseFields(win, pos, &req.Fields, rules)
}

// skipEmptyLines skips up to leadingEmptyLinesMax CRLFs at the start of
// win (RFC 9112 §2.2 robustness: a CRLF after a body is common) and
// returns where the start line begins.
func skipEmptyLines(win []byte) (int, error) {
	pos := 0
	for i := 0; i < leadingEmptyLinesMax && pos < len(win) && win[pos] == '\r'; i++ {
		if pos+1 == len(win) {
			return 0, ErrIncomplete
		}
		if win[pos+1] != '\n' {
			return 0, ErrBareCR
		}
		pos += 2
	}
	return pos, nil
}

// parseRequestLine parses "METHOD SP target SP HTTP/1.x CRLF" at win[pos:].
func parseRequestLine(win []byte, pos int, req *serval.Request, targetMax int) (int, error) {
	start := pos
	for pos < len(win) && charClass[win[pos]]&cTchar != 0 {
		pos++
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	if win[pos] != ' ' || pos == start {
		return 0, lineError(win[pos], ErrBadMethod)
	}
	req.Method = win[start:pos]
	req.MethodID = methodID(req.Method)
	pos++
	start = pos
	for ; pos < len(win) && win[pos] != ' '; pos++ {
		if charClass[win[pos]]&cTarget == 0 {
			return 0, lineError(win[pos], ErrBadTarget)
		}
		if pos-start == targetMax {
			return 0, ErrTargetTooLong
		}
	}
	if pos == len(win) {
		return 0, ErrIncomplete
	}
	if pos == start {
		return 0, ErrBadTarget
	}
	req.Target = win[start:pos]
	if err := parseTarget(req); err != nil {
		return 0, err
	}
	return parseVersion(win, pos+1, &req.Version)
}

// lineError names the defect of an unexpected byte: a bare LF gets its
// own error so logs tell line-ending tricks apart from plain garbage.
func lineError(c byte, otherwise error) error {
	if c == '\n' {
		return ErrBareLF
	}
	return otherwise
}

// versionBytes is len("HTTP/1.1"); a longer version is never valid.
const versionBytes = 8

// parseVersion parses "HTTP/1.x CRLF" at win[pos:]. A well-formed version
// we do not speak (HTTP/2.0, HTTP/1.2, RTSP/1.0) is 505; anything that is
// not name "/" DIGIT "." DIGIT is 400.
func parseVersion(win []byte, pos int, v *serval.Version) (int, error) {
	start := pos
	for ; pos < len(win) && win[pos] != '\r'; pos++ {
		c := win[pos]
		ok := 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '/'
		if !ok || pos-start == versionBytes {
			if c == '\n' {
				return 0, ErrBareLF
			}
			return 0, ErrBadVersion
		}
	}
	if pos == len(win) && pos-start < versionBytes {
		return 0, ErrIncomplete
	}
	// Here the version is complete, or as long as a valid one: judge it
	// now rather than wait for a CR that may never come.
	b := win[start:pos]
	if len(b) == versionBytes && string(b[:7]) == "HTTP/1." && (b[7] == '0' || b[7] == '1') {
		*v = serval.Version(10 + b[7] - '0')
	} else if wellFormedVersion(b) {
		return 0, ErrVersion
	} else {
		return 0, ErrBadVersion
	}
	if pos+1 >= len(win) {
		return 0, ErrIncomplete
	}
	if win[pos+1] != '\n' {
		return 0, ErrBareCR
	}
	return pos + 2, nil
}

// wellFormedVersion reports whether b is 1*UPPER "/" DIGIT "." DIGIT.
func wellFormedVersion(b []byte) bool {
	n := len(b)
	if n < 5 || b[n-4] != '/' || b[n-2] != '.' || !isDigit(b[n-3]) || !isDigit(b[n-1]) {
		return false
	}
	for _, c := range b[:n-4] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// methodID maps the well-known methods (case-sensitive, RFC 9110 §9.1).
func methodID(m []byte) serval.Method {
	switch string(m) { // the conversion in a switch does not allocate
	case "GET":
		return serval.MethodGet
	case "HEAD":
		return serval.MethodHead
	case "POST":
		return serval.MethodPost
	case "PUT":
		return serval.MethodPut
	case "DELETE":
		return serval.MethodDelete
	case "CONNECT":
		return serval.MethodConnect
	case "OPTIONS":
		return serval.MethodOptions
	case "TRACE":
		return serval.MethodTrace
	case "PATCH":
		return serval.MethodPatch
	}
	return serval.MethodOther
}

// finishRequest applies the rules that need the whole head and fills
// the request's framing summary.
func finishRequest(req *serval.Request, r *fieldRules) error {
	if err := r.check(); err != nil {
		return err
	}
	if r.hosts == 0 && req.Version == serval.Version11 {
		return ErrMissingHost // RFC 9112 §3.2; HTTP/1.0 may omit it
	}
	if r.badExpect {
		return ErrExpectation
	}
	if req.Form != serval.FormAbsolute {
		req.Host = r.host // absolute form: the target's authority wins
	}
	req.ContentLength = r.contentLength
	req.Chunked = r.te
	req.Close = r.close || req.Version == serval.Version10 && !r.keepAlive
	req.ExpectContinue = r.expectContinue
	req.Upgrade = r.upgradeToken && r.upgradeField
	return nil
}

// RequestBody tells the framing of a parsed request's body: a request has
// a body only when it says so (RFC 9112 §6.3).
func RequestBody(req *serval.Request) BodyKind {
	switch {
	case req.Chunked:
		return BodyChunked
	case req.ContentLength > 0:
		return BodyLength
	}
	return BodyNone
}

// logTargetMax bounds the target RequestLineOf returns: a log line wants
// the start of a long target, not all 8 KiB of it.
const logTargetMax = 1 << 10

// RequestLineOf returns the method and the path and query of the request
// line at the start of buf, for a log line about a head that was refused
// (ParseRequest keeps nothing of a rejected head). Only what is
// well-formed is returned: a method that is a token and a target of
// request-target bytes (cut at logTargetMax), both followed by SP; else
// nil. It judges nothing else and allocates nothing.
func RequestLineOf(buf []byte) (method, path, query []byte) {
	pos, err := skipEmptyLines(buf)
	if err != nil {
		return nil, nil, nil
	}
	start := pos
	for pos < len(buf) && charClass[buf[pos]]&cTchar != 0 {
		pos++
	}
	if pos == start || pos == len(buf) || buf[pos] != ' ' {
		return nil, nil, nil
	}
	method = buf[start:pos]
	pos++
	start = pos
	for pos < len(buf) && buf[pos] != ' ' && pos-start < logTargetMax {
		if charClass[buf[pos]]&cTarget == 0 {
			return method, nil, nil
		}
		pos++
	}
	if pos == start {
		return method, nil, nil
	}
	path, query = splitQuery(buf[start:pos])
	return method, path, query
}
