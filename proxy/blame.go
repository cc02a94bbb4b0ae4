package proxy

import (
	"errors"
	"os"

	"github.com/servalproxy/serval"
)

// bodyFailPhase says which side broke a response body transfer. A copy
// through our buffer knows (errClientWrite); a splice does not: its error
// may come from reading the upstream or from writing the client. Blaming
// the upstream for a client that went away would feed passive health a
// false failure and take healthy upstreams out, so the upstream socket is
// asked: bytes waiting there mean the client stopped taking them; a quiet
// but open upstream means the error was the client's unless the transfer
// timed out (then the upstream stalled).
func (s *Session) bodyFailPhase(err error) serval.Phase {
	if err == errClientWrite {
		return serval.PhaseClientWrite
	}
	// A client that is gone (closed or reset) is the cause: when it goes
	// while its request body is still being sent, our half-close ends the
	// upstream's request and its response ends short too.
	if s.d != nil && s.d.TCP != nil && peekSocket(s.d.TCP) == peekClosed {
		return serval.PhaseClientWrite
	}
	if s.c == nil || s.c.TCP == nil {
		return serval.PhaseUpstreamBody
	}
	switch peekSocket(s.c.TCP) {
	case peekPending:
		return serval.PhaseClientWrite
	case peekIdle:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return serval.PhaseClientWrite
		}
	}
	return serval.PhaseUpstreamBody
}

// bodyFail is bodyFailPhase with the error to report: a failure the
// client caused (it went away, and the read or splice that failed was
// the upstream side's) is errClientLeft, not the upstream error the
// transfer happened to return.
func (s *Session) bodyFail(err error) (serval.Phase, error) {
	phase := s.bodyFailPhase(err)
	if phase == serval.PhaseClientWrite && err != errClientWrite {
		err = errClientLeft
	}
	return phase, err
}

// peekResult is what a non-blocking one-byte MSG_PEEK saw.
type peekResult uint8

const (
	peekUnknown peekResult = iota // not a socket we can ask, or an error
	peekPending                   // at least one byte is waiting
	peekIdle                      // open, nothing to read (EAGAIN)
	peekClosed                    // EOF or reset
)
