//go:build linux && go1.27

package sockio

import (
	"net"
	"unsafe"
)

// With a Go newer than the one rtpoll_linux.go was checked against,
// polling is off: reads are the runtime's.

const (
	pollNoError     = 0
	pollErrClosing  = 1
	pollErrTimeout  = 2
	pollNotPollable = 3
)

func runtimeReadiness() bool                     { return false }
func runtimePollWait(ctx uintptr, mode int) int  { return pollNotPollable }
func runtimePollReset(ctx uintptr, mode int) int { return pollNotPollable }
func pollDescOf(tcp *net.TCPConn) unsafe.Pointer { return nil }
func readyPending(pd unsafe.Pointer) bool        { return true }
