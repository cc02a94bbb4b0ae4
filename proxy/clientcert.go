package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	"github.com/servalproxy/serval"
)

// managedField reports whether name is a field the proxy removes,
// replaces or frames by: not one a configuration may take over.
func managedField(name []byte) bool {
	if hopByHop(name) {
		return true
	}
	for _, a := range aliasedFields {
		if len(a) == len(name) && serval.EqualFold(name, a) {
			return true
		}
	}
	return false
}

// sameFieldLoose reports whether name is lower (a lower-case field name)
// with '_' read as '-': the field itself or its underscore spelling
// (underscoreAlias, ClientCertHeader).
func sameFieldLoose(name []byte, lower string) bool {
	if len(name) != len(lower) {
		return false
	}
	for i := range len(name) {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// clientCert is a session's ClientCertHeader element for the client
// certificate it last saw: computed once per connection (per leaf), not
// per request.
type clientCert struct {
	leaf  *x509.Certificate
	value []byte // cap ClientCertBytesMax, allocated with the session
}

// certValue is the XFCC element for the verified client certificate of
// x's connection, nil when there is none.
func (s *Session) certValue(x *serval.Exchange) []byte {
	ti := x.TLSInfo
	if ti == nil || !ti.Peer.Verified || ti.Peer.Leaf == nil {
		return nil
	}
	if s.cert.leaf != ti.Peer.Leaf {
		s.cert.value = appendClientCert(s.cert.value[:0], &ti.Peer)
		s.cert.leaf = ti.Peer.Leaf
	}
	return s.cert.value
}

// appendClientCert appends the XFCC element of p to b, within cap(b)
// (the hash always fits: cap(b) is ClientCertBytesMax): Hash, Subject,
// then the URI and DNS names while they fit, in certificate order. A
// part that does not fit, or holds a control character, is left out
// whole; a value is never cut.
func appendClientCert(b []byte, p *serval.PeerInfo) []byte {
	sum := sha256.Sum256(p.Leaf.Raw)
	b = append(b, "Hash="...)
	b = hex.AppendEncode(b, sum[:])
	b = appendCertPart(b, "Subject", p.Subject, true)
	for _, u := range p.URIs {
		b = appendCertPart(b, "URI", u, false)
	}
	for _, d := range p.DNSNames {
		b = appendCertPart(b, "DNS", d, false)
	}
	return b
}

// appendCertPart appends ";key=value" to b when it fits cap(b), the value
// in double quotes (with '"' and '\' escaped) when quote is set or it
// holds a separator of the syntax (',', ';', '=', '"') or a space. A value
// with a control character (CR, LF, NUL, ...) could end the field line:
// such a part is left out, as is an empty one.
func appendCertPart(b []byte, key, v string, quote bool) []byte {
	if v == "" {
		return b
	}
	need, escapes := len(";=")+len(key)+len(v), 0
	for i := range len(v) {
		switch c := v[i]; {
		case c < 0x20 || c == 0x7f:
			return b
		case c == '"' || c == '\\':
			escapes++
			quote = true
		case c == ',' || c == ';' || c == '=' || c == ' ':
			quote = true
		}
	}
	if quote {
		need += 2 + escapes
	}
	if len(b)+need > cap(b) {
		return b
	}
	b = append(b, ';')
	b = append(b, key...)
	b = append(b, '=')
	if !quote {
		return append(b, v...)
	}
	b = append(b, '"')
	for i := range len(v) {
		if v[i] == '"' || v[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return append(b, '"')
}
