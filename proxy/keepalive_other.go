//go:build !unix

package proxy

import "net"

// keepAliveOn cannot tell here: false (a tunnel then sets its own).
func keepAliveOn(*net.TCPConn) bool { return false }
