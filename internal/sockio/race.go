//go:build race

package sockio

// raceEnabled: under the race detector Read and Write are the TCPConn's
// own. syscall.Read and syscall.Write tell the detector that a write
// happens before the read that sees its bytes; raw system calls do not,
// and programs (tests above all) that order goroutines through a socket
// would be reported as racing.
const raceEnabled = true
