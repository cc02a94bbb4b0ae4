package proxy

import (
	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Max-Forwards (RFC 9110 §7.6.2): a TRACE or OPTIONS request carries a
// hop budget. An intermediary decrements it on the way; one that receives
// 0 does not forward the request but answers it as its final recipient.
// Other methods' Max-Forwards pass untouched, and so does a field that is
// not one decimal number (1*DIGIT: a list, a sign) or that is repeated:
// which hop budget would count is the upstream's to judge, as nginx and
// HAProxy leave it.

// maxForwardsMax is the largest Max-Forwards we send on: a received value
// above it (or too long to parse) leaves as this.
const maxForwardsMax = 1<<31 - 1

var valueMessageHTTP = []byte("message/http")

// maxForwards returns the Max-Forwards value to forward for received v,
// and marks the request ours to answer when v is 0. A value that is not
// a decimal number leaves unchanged (an upstream may judge it).
func (s *Session) maxForwards(v []byte) []byte {
	if len(v) == 0 {
		return v
	}
	n := int64(0)
	for _, c := range v {
		if c < '0' || c > '9' {
			return v
		}
		if n <= maxForwardsMax {
			n = n*10 + int64(c-'0')
		}
	}
	if n == 0 {
		s.final = true
		return v
	}
	if out := s.appendDecimal(min(n-1, maxForwardsMax)); out != nil {
		return out
	}
	return v // no room: errHeadTooLarge follows (scratchFull)
}

// answerFinal answers a TRACE or OPTIONS whose hop budget ended here, as
// its final recipient: OPTIONS with 200 and no content (what the
// upstream allows is not ours to say), TRACE with 200 and the request as received in a message/http
// body, its credentials (Authorization, Proxy-Authorization, Cookie) left
// out (RFC 9110 §9.3.8). Nothing goes upstream, and the upstream's health
// learns nothing.
func (s *Session) answerFinal() Result {
	s.finishBody()
	req := s.req
	trace := req.MethodID == serval.MethodTrace
	size := 0
	if trace {
		size = len(req.Method) + 1 + len(req.Target) + 1 + len("HTTP/1.1\r\n") + len("\r\n")
		for _, f := range req.Fields {
			if !credential(f.Name) {
				size += len(f.Name) + len(": \r\n") + len(f.Value)
			}
		}
	}
	b := http1.AppendStatusLine(s.wbuf[:0], 200, nil)
	b = http1.AppendField(b, nameDate, s.date.Get(serval.Now()))
	if trace {
		b = http1.AppendField(b, nameCType, valueMessageHTTP)
	}
	b = appendContentLength(b, int64(size))
	if !s.keep {
		b = http1.AppendField(b, nameConn, valueClose)
	} else if req.Version == serval.Version10 {
		b = http1.AppendField(b, nameConn, valueKeep)
	}
	b = append(b, "\r\n"...)
	if trace {
		b = append(b, req.Method...)
		b = append(b, ' ')
		b = append(b, req.Target...)
		if req.Version == serval.Version10 {
			b = append(b, " HTTP/1.0\r\n"...)
		} else {
			b = append(b, " HTTP/1.1\r\n"...)
		}
		for _, f := range req.Fields {
			if !credential(f.Name) {
				b = http1.AppendField(b, f.Name, f.Value)
			}
		}
		b = append(b, "\r\n"...)
	}
	if cap(b) <= cap(s.wbuf) {
		s.wbuf = b[:0]
	}
	s.x.Status = 200
	ok := s.writeClient(b)
	return Result{KeepAlive: s.keep && ok, Status: 200}
}

// credential reports a request field a TRACE answer leaves out.
func credential(name []byte) bool {
	return serval.EqualFold(name, "authorization") || serval.EqualFold(name, "proxy-authorization") ||
		serval.EqualFold(name, "cookie")
}
