//go:build !linux

package proxy

import "net"

// peekSocket cannot ask the kernel here; the caller then blames the
// upstream, as before.
func peekSocket(*net.TCPConn) peekResult { return peekUnknown }

// writable cannot ask the kernel here: the caller then blames the
// upstream, as before.
func writable(*net.TCPConn) bool { return false }
