package proxy

import (
	"bytes"
	"strconv"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// extraFieldsMax is the room the Outbound field table keeps above
// FieldsMax for the fields we add (Host, X-Forwarded-For/Proto/Host, Via,
// the client certificate, TE, Transfer-Encoding or Content-Length,
// Connection) and a few for OnUpstreamRequest.
const extraFieldsMax = 11

// scratchExtraBytes is the scratch room above HeadBytesMax for values we
// build: our X-Forwarded-For entry, the Via entry, separators, the query.
const scratchExtraBytes = 1 << 10

var (
	nameHost       = []byte("Host")
	nameXFF        = []byte("X-Forwarded-For")
	nameXFProto    = []byte("X-Forwarded-Proto")
	nameXFHost     = []byte("X-Forwarded-Host")
	nameVia        = []byte("Via")
	nameTE         = []byte("TE")
	nameTEncoding  = []byte("Transfer-Encoding")
	nameCLength    = []byte("Content-Length")
	nameConn       = []byte("Connection")
	nameCType      = []byte("Content-Type")
	nameDate       = []byte("Date")
	nameRetryAfter = []byte("Retry-After")
	valueHTTP      = []byte("http")
	valueHTTPS     = []byte("https")
	valueTrailers  = []byte("trailers")
	valueChunked   = []byte("chunked")
	valueClose     = []byte("close")
	valueKeep      = []byte("keep-alive")
	valueUpgrade   = []byte("upgrade")
	valueTE        = []byte("TE")
	valueUpgradeTE = []byte("upgrade, TE")
	valueText      = []byte("text/plain; charset=utf-8")
	valueOneSecond = []byte("1")
	listSep        = []byte(", ")
)

// hopByHop reports whether name is a hop-by-hop field (RFC 9110 §7.6.1)
// or one we regenerate (Transfer-Encoding, Expect, Trailer).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return serval.EqualFold(name, "te")
	case 6:
		return serval.EqualFold(name, "expect")
	case 7:
		return serval.EqualFold(name, "upgrade") || serval.EqualFold(name, "trailer")
	case 10:
		return serval.EqualFold(name, "connection") || serval.EqualFold(name, "keep-alive")
	case 16:
		return serval.EqualFold(name, "proxy-connection")
	case 17:
		return serval.EqualFold(name, "transfer-encoding")
	case 18:
		return serval.EqualFold(name, "proxy-authenticate")
	case 19:
		return serval.EqualFold(name, "proxy-authorization")
	}
	return false
}

// aliasedFields are the fields whose underscore spellings are dropped
// from requests (underscoreAlias).
var aliasedFields = [...]string{"host", "content-length", "transfer-encoding", "connection", "keep-alive",
	"proxy-connection", "te", "trailer", "upgrade", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
	"x-real-ip", "forwarded", "via", "proxy-authorization"}

// underscoreAlias reports whether name, with '_' read as '-', is one of
// the fields the proxy removes, replaces or frames by (aliasedFields)
// while it is not that field: "X_Forwarded_For", "Transfer_Encoding".
// CGI-style origins (PHP, WSGI, Rack) map '-' and '_' to the same
// variable (HTTP_X_FORWARDED_FOR), so such a field would let a client set
// what the proxy sets; nginx drops every field with '_' by default. Only
// these are dropped: other names with '_' are legitimate.
func underscoreAlias(name []byte) bool {
	if bytes.IndexByte(name, '_') < 0 {
		return false
	}
	for _, a := range aliasedFields {
		if sameFieldLoose(name, a) {
			return true
		}
	}
	return false
}

// connectionListed reports whether name is listed in any Connection field
// of fields (those fields are hop-by-hop too, RFC 9110 §7.6.1).
func connectionListed(fields []serval.Header, name []byte) bool {
	for i := range fields {
		if !serval.EqualFold(fields[i].Name, "connection") {
			continue
		}
		it := http1.NewTokenIter(fields[i].Value)
		for tok, ok := it.Next(); ok; tok, ok = it.Next() {
			if equalFoldBytes(tok, name) {
				return true
			}
		}
	}
	return false
}

// fieldCount counts the fields named name (lower case).
func fieldCount(fields []serval.Header, name string) int {
	n := 0
	for _, f := range fields {
		if serval.EqualFold(f.Name, name) {
			n++
		}
	}
	return n
}

func equalFoldBytes(a, b []byte) bool {
	return len(a) == len(b) && serval.EqualFold(a, string(b)) // string(b) in a call argument does not allocate
}

// rewriteRequest builds the outbound head of req into s.out, with values
// in s.scratch. It never allocates: the field table and scratch are the
// session's. It fails only when the values do not fit the scratch (a head
// larger than this forwarder's HeadBytesMax).
func (s *Session) rewriteRequest(d *Downstream, x *serval.Exchange, req *serval.Request) error {
	cfg := &s.f.cfg
	s.scratch, s.scratchFull = s.scratch[:0], false
	out := &s.out
	out.Method = req.Method
	out.Path = s.outPath(x, req)
	host := req.Host
	if len(host) == 0 && x.LocalAddr.IsValid() {
		// No Host (HTTP/1.0) or an empty one: the upstream, spoken to in
		// HTTP/1.1, needs one, and many reject an empty value. The
		// authority the client reached is this connection's local
		// address (RFC 9112 §3.3).
		var b [64]byte
		host = s.appendList(nil, x.LocalAddr.AppendTo(b[:0]))
	}
	out.Fields = append(out.Fields[:0], serval.Header{Name: nameHost, Value: host})
	var xfProto, xfHost []byte
	te := false
	for _, f := range req.Fields {
		switch {
		case serval.EqualFold(f.Name, "te"):
			if te || req.Version < serval.Version11 || !http1.HasToken(f.Value, "trailers") {
				// An HTTP/1.0 client gets its body de-chunked, without
				// trailers: "trailers" from an intermediary speaks for
				// every client downstream (RFC 9110 §10.1.4), so it is
				// not passed on for one that cannot take them.
				continue
			}
			// Forwarded below, the rest dropped; a sender of TE lists it
			// in Connection (RFC 9110 §10.1.4).
			f, te = serval.Header{Name: nameTE, Value: valueTrailers}, true
		case s.upgrade && serval.EqualFold(f.Name, "upgrade"):
			// Kept: the protocols offered (tunnel.go).
		case hopByHop(f.Name), serval.EqualFold(f.Name, "host"), connectionListed(req.Fields, f.Name),
			serval.EqualFold(f.Name, "x-forwarded-for"):
			continue
		case serval.EqualFold(f.Name, "content-length"):
			// One field with the length the parser settled on follows: a
			// list ("2, 2") or repeated lines of one value are valid to us
			// (RFC 9110 §8.6) and may not be to the upstream.
			continue
		case serval.EqualFold(f.Name, "x-forwarded-proto"):
			// An empty value (or only commas) says nothing: ours goes.
			if len(trimListEnds(f.Value)) > 0 {
				xfProto = f.Value
			}
			continue
		case serval.EqualFold(f.Name, "x-forwarded-host"):
			if len(trimListEnds(f.Value)) > 0 {
				xfHost = f.Value
			}
			continue
		case serval.EqualFold(f.Name, "via") && s.f.via != nil:
			continue
		case len(f.Name) == 12 && serval.EqualFold(f.Name, "max-forwards") &&
			(req.MethodID == serval.MethodTrace || req.MethodID == serval.MethodOptions) &&
			fieldCount(req.Fields, "max-forwards") == 1:
			f.Value = s.maxForwards(f.Value)
		case underscoreAlias(f.Name):
			continue
		case s.f.certName != nil && sameFieldLoose(f.Name, s.f.certLower):
			// Ours, below: the client's own is dropped (kept in the list
			// when trusted); an underscore spelling always is.
			continue
		}
		// The table holds FieldsMax forwarded fields beside the ones we
		// add (Host among them, first). One that does not fit fails the
		// request: a field dropped in silence could be the one the
		// upstream authenticates or routes on.
		if len(out.Fields)-1 >= cap(out.Fields)-extraFieldsMax {
			return errTooManyFields
		}
		out.Fields = append(out.Fields, f)
	}
	// X-Forwarded-For: the incoming list (trusted) plus the client.
	var xff, via []byte
	if cfg.TrustForwarded {
		xff = s.joinFields(req.Fields, "x-forwarded-for")
	}
	xff = s.appendList(xff, d.ClientAddr)
	if !cfg.TrustForwarded || xfProto == nil {
		xfProto = valueHTTP
		if d.TLS {
			xfProto = valueHTTPS
		}
	}
	if !cfg.TrustForwarded || xfHost == nil {
		xfHost = host
	}
	if s.f.via != nil {
		// received-protocol is the version of the request as received
		// (RFC 9110 §7.6.3).
		via = s.appendList(s.joinFields(req.Fields, "via"), s.f.viaFor(req.Version))
	}
	var cert []byte
	if s.f.certName != nil {
		if cfg.TrustForwarded {
			cert = s.joinFields(req.Fields, s.f.certLower)
		}
		if v := s.certValue(x); v != nil {
			// Copied: the value is kept for the connection's next
			// requests, and an OnUpstreamRequest hook may edit this one.
			cert = s.appendList(cert, v)
		}
	}
	var length []byte
	if !req.Chunked && req.ContentLength >= 0 {
		length = s.appendDecimal(req.ContentLength)
	}
	if s.scratchFull {
		return errHeadTooLarge
	}
	out.Fields = append(out.Fields, serval.Header{Name: nameXFF, Value: xff},
		serval.Header{Name: nameXFProto, Value: xfProto}, serval.Header{Name: nameXFHost, Value: xfHost})
	if via != nil {
		out.Fields = append(out.Fields, serval.Header{Name: nameVia, Value: via})
	}
	if cert != nil {
		out.Fields = append(out.Fields, serval.Header{Name: s.f.certName, Value: cert})
	}
	if req.Chunked {
		out.Fields = append(out.Fields, serval.Header{Name: nameTEncoding, Value: valueChunked})
	} else if length != nil {
		out.Fields = append(out.Fields, serval.Header{Name: nameCLength, Value: length})
	}
	switch {
	case s.upgrade && te:
		out.Fields = append(out.Fields, serval.Header{Name: nameConn, Value: valueUpgradeTE})
	case s.upgrade:
		out.Fields = append(out.Fields, serval.Header{Name: nameConn, Value: valueUpgrade})
	case te:
		out.Fields = append(out.Fields, serval.Header{Name: nameConn, Value: valueTE})
	}
	return nil
}

// joinFields joins the values of every field named name into one list in
// the scratch (RFC 9110 §5.3), nil when there is none. A field listed in
// Connection is hop-by-hop and left out (RFC 9110 §7.6.1), as the loop
// over the fields leaves out the others.
func (s *Session) joinFields(fields []serval.Header, name string) []byte {
	var list []byte
	for i := range fields {
		if serval.EqualFold(fields[i].Name, name) && !connectionListed(fields, fields[i].Name) {
			list = s.appendList(list, fields[i].Value)
		}
	}
	return list
}

// appendList appends v to list, which is nil or the scratch's tail (lists
// are built one at a time), and returns the longer list. Empty elements
// at v's ends ("a, ", ", a": RFC 9110 §5.6.1 has recipients ignore them)
// are left out, so the joined list has none at the seams.
func (s *Session) appendList(list, v []byte) []byte {
	if v = trimListEnds(v); len(v) == 0 {
		return list
	}
	start := len(s.scratch) - len(list)
	need := len(v)
	if len(list) > 0 {
		need += len(listSep)
	}
	if len(s.scratch)+need > cap(s.scratch) {
		s.scratchFull = true
		return list
	}
	if len(list) > 0 {
		s.scratch = append(s.scratch, listSep...)
	}
	s.scratch = append(s.scratch, v...)
	return s.scratch[start:len(s.scratch):len(s.scratch)]
}

// trimListEnds returns v without the commas and whitespace at its ends.
func trimListEnds(v []byte) []byte {
	for len(v) > 0 && (v[0] == ',' || v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ',' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// appendDecimal writes n in decimal to the scratch and returns it.
func (s *Session) appendDecimal(n int64) []byte {
	start := len(s.scratch)
	if start+20 > cap(s.scratch) {
		s.scratchFull = true
		return nil
	}
	s.scratch = strconv.AppendInt(s.scratch, n, 10)
	return s.scratch[start:len(s.scratch):len(s.scratch)]
}

// outPath is the path and query to send: RewritePath or the request path.
func (s *Session) outPath(x *serval.Exchange, req *serval.Request) []byte {
	p := req.Path
	if x.RewritePath != nil {
		p = x.RewritePath
	}
	// Capped at their length: an OnUpstreamRequest hook that appends to
	// Outbound.Path gets a copy, instead of writing over the bytes that
	// follow (the request's fields in the read buffer, or the values
	// built after it in the scratch).
	if req.Query == nil {
		return p[:len(p):len(p)]
	}
	start := len(s.scratch)
	if start+len(p)+1+len(req.Query) > cap(s.scratch) {
		s.scratchFull = true
		return p[:len(p):len(p)]
	}
	s.scratch = append(s.scratch, p...)
	s.scratch = append(s.scratch, '?')
	s.scratch = append(s.scratch, req.Query...)
	return s.scratch[start:len(s.scratch):len(s.scratch)]
}
