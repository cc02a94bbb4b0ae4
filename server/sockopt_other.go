//go:build !linux

package server

import "net"

// setUnsentMax does nothing here (Config.UnsentBytesMax is Linux's
// TCP_NOTSENT_LOWAT).
func setUnsentMax(*net.TCPConn, int) {}

// unreadBytes cannot tell here: false (see the Linux version).
func unreadBytes(net.Conn) bool { return false }
