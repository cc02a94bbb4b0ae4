package http1

import (
	"bytes"

	"github.com/servalproxy/serval"
)

// slash is the Path of an absolute-form target without a path. Shared and
// read-only: nobody may write through a Request's views.
var slash = []byte("/")

// asterisk is the Path of an OPTIONS request whose absolute-form target
// has no path and no query: the last proxy sends it as "OPTIONS *"
// (RFC 9112 §3.2.4). Shared and read-only like slash.
var asterisk = []byte("*")

// parseTarget classifies req.Target (RFC 9112 §3.2) and fills Form, Path,
// Query and, for absolute form, Host. The target's bytes are already
// known to be VCHARs.
func parseTarget(req *serval.Request) error {
	t := req.Target
	switch {
	case t[0] == '/':
		if req.MethodID == serval.MethodConnect {
			return ErrBadTarget // CONNECT takes authority-form only
		}
		req.Form = serval.FormOrigin
		req.Path, req.Query = splitQuery(t)
		if !validPercents(req.Path) {
			return ErrBadTarget
		}
	case len(t) == 1 && t[0] == '*':
		if req.MethodID != serval.MethodOptions {
			return ErrBadTarget
		}
		req.Form = serval.FormAsterisk
		req.Path = t
	case req.MethodID == serval.MethodConnect:
		if !validAuthority(t, true, false) {
			return ErrBadTarget
		}
		req.Form = serval.FormAuthority
	default:
		return parseAbsolute(req, t)
	}
	return nil
}

// parseAbsolute takes an http or https absolute-form target. The
// authority becomes req.Host (it overrides the Host field, RFC 9112
// §3.2.2); userinfo is rejected (RFC 9110 §4.2.4: treat it as an error).
func parseAbsolute(req *serval.Request, t []byte) error {
	var rest []byte
	switch {
	case hasPrefixFold(t, "http://"):
		rest = t[len("http://"):]
	case hasPrefixFold(t, "https://"):
		rest = t[len("https://"):]
	default:
		return ErrBadTarget
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	auth := rest[:end]
	if !validAuthority(auth, false, false) {
		return ErrBadTarget
	}
	req.Form = serval.FormAbsolute
	req.Host = auth
	switch pq := rest[end:]; {
	case len(pq) == 0 && req.MethodID == serval.MethodOptions:
		req.Path = asterisk
	case len(pq) == 0:
		req.Path = slash
	case pq[0] == '?':
		req.Path, req.Query = slash, pq[1:]
	default:
		req.Path, req.Query = splitQuery(pq)
		if !validPercents(req.Path) {
			return ErrBadTarget
		}
	}
	return nil
}

// validPercents reports whether every '%' in the path p begins a
// pct-encoded octet ("%" HEXDIG HEXDIG, RFC 3986 §2.1). A path with a
// stray '%' is no absolute-path (RFC 9112 §3.2.1): nginx refuses it with
// 400 and net/http too, so an upstream behind us would not parse it as we
// did. The query is left alone: "?q=100%" is common, and neither of them
// checks it.
func validPercents(p []byte) bool {
	for i := bytes.IndexByte(p, '%'); i >= 0; {
		if i+2 >= len(p) || charClass[p[i+1]]&cHex == 0 || charClass[p[i+2]]&cHex == 0 {
			return false
		}
		p = p[i+3:]
		i = bytes.IndexByte(p, '%')
	}
	return true
}

func splitQuery(t []byte) (path, query []byte) {
	for i, c := range t {
		if c == '?' {
			return t[:i], t[i+1:]
		}
	}
	return t, nil
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && serval.EqualFold(b[:len(prefix)], prefix)
}

// portDigitsMax bounds a port: 65535 has five digits.
const portDigitsMax = 5

// validAuthority reports whether b is host [":" port] (RFC 3986 §3.2
// without userinfo): host an IP-literal in brackets or a reg-name
// (unreserved, sub-delims, pct-encoded; this covers IPv4 too), port at
// most 65535. portRequired is for CONNECT's authority-form, emptyOK for a
// Host field (RFC 9110 §7.2 allows an empty one). An authority that is not
// empty names a host: an http(s) URI with an empty host is invalid and its
// recipient must reject it (RFC 9110 §4.2.1, §4.2.2), so "http://:80/" and
// "Host: :80" are refused as "http:///" is, rather than forwarded with a
// Host naming no host (nginx refuses both too).
func validAuthority(b []byte, portRequired, emptyOK bool) bool {
	if len(b) == 0 {
		return emptyOK && !portRequired
	}
	host, port, hasPort := b, []byte(nil), false
	if b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 || !validIPLiteral(b[1:end]) {
			return false
		}
		host = b[:end+1]
		if rest := b[end+1:]; len(rest) > 0 {
			if rest[0] != ':' {
				return false
			}
			port, hasPort = rest[1:], true
		}
	} else {
		for i, c := range b {
			if c == ':' {
				host, port, hasPort = b[:i], b[i+1:], true
				break
			}
		}
		if !validRegName(host) {
			return false
		}
	}
	if len(host) == 0 || portRequired && len(port) == 0 {
		return false
	}
	return !hasPort || validPort(port)
}

func validRegName(b []byte) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '%' {
			if i+2 >= len(b) || charClass[b[i+1]]&cHex == 0 || charClass[b[i+2]]&cHex == 0 {
				return false
			}
			i += 2
			continue
		}
		if charClass[c]&cRegName == 0 {
			return false
		}
	}
	return true
}

// validIPLiteral accepts the bytes of IPv6address and IPvFuture between
// the brackets; the exact IPv6 grammar is the dialer's business, ours is
// that nothing outside it passes through.
func validIPLiteral(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if b[0] == 'v' || b[0] == 'V' {
		for _, c := range b[1:] {
			if charClass[c]&cRegName == 0 && c != ':' {
				return false
			}
		}
		return true
	}
	for _, c := range b {
		if charClass[c]&cHex == 0 && c != ':' && c != '.' {
			return false
		}
	}
	return true
}

// validPort accepts an empty port (RFC 3986 allows "host:") or up to
// 65535.
func validPort(p []byte) bool {
	if len(p) > portDigitsMax {
		return false
	}
	n := 0
	for _, c := range p {
		if !isDigit(c) {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}
