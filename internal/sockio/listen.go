package sockio

import (
	"net"
	"reflect"
	"syscall"
	"unsafe"
)

// listenConfigOffset is where a net.TCPListener keeps the ListenConfig
// it was made with (its unexported field lc), or 0 when this Go's
// TCPListener has no such field of that type: AcceptKeepAliveOff then
// does nothing.
var listenConfigOffset = func() uintptr {
	f, ok := reflect.TypeFor[net.TCPListener]().FieldByName("lc")
	if !ok || f.Type != reflect.TypeFor[net.ListenConfig]() || f.Offset == 0 {
		return 0
	}
	return f.Offset
}()

// ReadInt is what get (a getsockopt or ioctl) reads off sc's socket (a
// *net.TCPConn or *net.TCPListener), and whether it could: false when the
// socket is closed or get failed.
func ReadInt(sc syscall.Conn, get func(fd int) (int, error)) (int, bool) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	v, gerr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { v, gerr = get(int(fd)) }); err != nil {
		return 0, false
	}
	return v, gerr == nil
}

// AcceptKeepAliveOff makes ln accept connections without TCP keepalive,
// when ln is a *net.TCPListener left at Go's default (net.Listen and
// net.FileListener: every accepted socket gets keepalive at 15 s, four
// setsockopt calls). It reports whether ln's accepted connections now go
// without keepalive (false: ln is not a *net.TCPListener, its maker
// asked for keepalive, or this Go keeps the setting elsewhere). A server
// whose every connection state has its own timeout does not need the
// probes, nginx and HAProxy leave them off by default, and on clients
// that send one request per connection the four calls were a tenth of
// the proxy's time. The listener's setting is reached through its
// unexported field, found by reflection once (net offers no other way
// for a listener made from a file); call it before ln's first Accept.
func AcceptKeepAliveOff(ln net.Listener) bool {
	tl, ok := ln.(*net.TCPListener)
	if !ok || tl == nil || listenConfigOffset == 0 {
		return false
	}
	lc := (*net.ListenConfig)(unsafe.Add(unsafe.Pointer(tl), listenConfigOffset))
	if lc.KeepAliveConfig.Enable || lc.KeepAlive > 0 {
		return false
	}
	lc.KeepAlive = -1
	return true
}
