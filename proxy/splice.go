package proxy

import (
	"io"
	"net"

	"github.com/servalproxy/serval/internal/sockio"
)

// spliceSockets moves up to n bytes from the src socket to the dst socket
// in the kernel and returns how many reached dst; fewer than n with a nil
// error means src's peer closed first. A source read through
// internal/sockio's readiness poller is spliced by sockio (it waits for
// the source the way its reads do); any other goes through Go's splice,
// (*net.TCPConn).ReadFrom over *lim, a LimitedReader of srcTCP.
func spliceSockets(dst net.Conn, dstTCP *net.TCPConn, src net.Conn, srcTCP *net.TCPConn, n int64, lim *io.LimitedReader) (int64, error) {
	if sc, ok := src.(*sockio.Conn); ok && sc.Polled() {
		if dc, ok := dst.(*sockio.Conn); ok {
			p, err := sockio.GetPipe()
			if err != nil {
				return 0, err
			}
			m, err := sc.SpliceTo(dc, n, p)
			sockio.PutPipe(p)
			return m, err
		}
	}
	*lim = io.LimitedReader{R: srcTCP, N: n}
	return dstTCP.ReadFrom(lim)
}
