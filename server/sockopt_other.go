//go:build !linux

package server

import "net"

// setUnsentMax does nothing here (Config.UnsentBytesMax is Linux's
// TCP_NOTSENT_LOWAT).
func setUnsentMax(*net.TCPConn, int) {}

// unreadBytes cannot tell here: false (see the Linux version).
func unreadBytes(net.Conn) bool { return false }

// setListenerUnsentMax does nothing here: false.
func setListenerUnsentMax(*net.TCPListener, int) bool { return false }

// unsentMaxIs cannot tell here: false.
func unsentMaxIs(net.Conn, int) bool { return false }
