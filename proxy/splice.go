package proxy

import (
	"io"
	"net"

	"github.com/servalproxy/serval/internal/sockio"
)

// spliceSockets moves up to n bytes from the src socket to the dst socket
// in the kernel and returns how many reached dst; fewer than n with a nil
// error means src's peer closed first. progress is called between rounds
// that moved bytes, to renew both sockets' deadlines: they bound each
// stall, not the whole n (a large body to or from a slow peer takes any
// time while it moves). A source read through internal/sockio's readiness
// poller is spliced by sockio (it waits for the source the way its reads
// do; a round is a pipe's worth); any other goes through Go's splice,
// (*net.TCPConn).ReadFrom over *lim, a LimitedReader of srcTCP, whose
// deadlines cannot be renewed inside a call: it moves
// runtimeSpliceRoundBytes a call.
func spliceSockets(dst net.Conn, dstTCP *net.TCPConn, src net.Conn, srcTCP *net.TCPConn, n int64, lim *io.LimitedReader, progress func() error) (int64, error) {
	if sc, ok := src.(*sockio.Conn); ok && sc.Polled() {
		if dc, ok := dst.(*sockio.Conn); ok {
			p, err := sockio.GetPipe()
			if err != nil {
				return 0, err
			}
			m, err := sc.SpliceTo(dc, n, p, progress)
			sockio.PutPipe(p)
			return m, err
		}
	}
	var moved int64
	for moved < n {
		round := min(n-moved, runtimeSpliceRoundBytes)
		*lim = io.LimitedReader{R: srcTCP, N: round}
		m, err := dstTCP.ReadFrom(lim)
		moved += m
		if err != nil || m < round || moved == n {
			return moved, err
		}
		if progress != nil {
			if err := progress(); err != nil {
				return moved, err
			}
		}
	}
	return moved, nil
}

// runtimeSpliceRoundBytes is what one call of Go's splice moves: its
// deadlines bound the call, so this is the most a peer must take or give
// within one timeout (8.7 KB/s with 30 s timeouts).
const runtimeSpliceRoundBytes = 256 << 10
