package pool

import (
	"time"

	"github.com/servalproxy/serval"
)

// reapLoop runs the reaper every ReapInterval until Close.
func (p *Fixed) reapLoop() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.ReapInterval)
	defer t.Stop()
	// poll runs while connections wait for their upstream's close.
	poll := time.NewTimer(closingPoll)
	poll.Stop()
	defer poll.Stop()
	polling := false
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.reapOnce(p.now())
		case <-p.closing.kick:
			if !polling {
				poll.Reset(closingPoll)
				polling = true
			}
		case <-poll.C:
			polling = p.reapClosing(p.now(), false) > 0
			if polling {
				poll.Reset(closingPoll)
			}
		}
	}
}

// reapOnce closes idle connections past IdleTimeout or MaxAge at now, or
// known closed by their peer, at most reapBatchMax of them; it returns
// how many it closed. Only the reaper goroutine calls it (tests call it
// directly on a pool whose reaper is idle), because it owns reapBuf.
func (p *Fixed) reapOnce(now time.Time) int {
	total := 0
	for i := range p.ups {
		up := &p.ups[i]
		for t := range up.stacks {
			if total == len(p.reapBuf) {
				return total
			}
			n := p.collect(&up.stacks[t], now, p.reapBuf[total:])
			for k := total; k < total+n; k++ {
				c := p.reapBuf[k]
				p.reapBuf[k] = nil
				switch {
				case now.Sub(c.IdleSince) >= p.idleTimeout(c):
					up.idleEvicts.Add(1)
				case now.Sub(c.Created) >= p.cfg.MaxAge:
					up.ages.Add(1)
				default:
					up.staleEvicts.Add(1) // closed by its peer
				}
				p.closeConn(up, c)
			}
			up.idle.Add(int64(-n))
			total += n
		}
	}
	return total
}

// collect moves the expired connections of s into out (as many as fit),
// keeps the rest in LIFO order, and returns how many it moved. The lock
// covers a scan of at most IdlePerUpstream pointers and no syscall; the
// caller closes the connections after it is released.
func (p *Fixed) collect(s *stack, now time.Time, out []*serval.UpstreamConn) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	moved, kept := 0, 0
	for k := 0; k < s.n; k++ {
		c := s.conns[k]
		// A connection its peer closed goes too: its socket would wait
		// in CLOSE_WAIT until reuse or the idle timeout (the backend
		// restarted, or closes idle connections sooner than we do).
		expired := now.Sub(c.IdleSince) >= p.idleTimeout(c) || now.Sub(c.Created) >= p.cfg.MaxAge || peerClosed(c)
		if expired && moved < len(out) {
			out[moved] = c
			moved++
			continue
		}
		s.conns[kept] = c
		kept++
	}
	for k := kept; k < s.n; k++ {
		s.conns[k] = nil
	}
	s.n = kept
	return moved
}
