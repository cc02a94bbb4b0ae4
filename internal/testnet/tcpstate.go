package testnet

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TCPTimeWait is TCP_TIME_WAIT as /proc/net/tcp shows a socket's state.
const TCPTimeWait = 0x06

// TCPState returns the state (the kernel's TCP_* number, e.g.
// TCPTimeWait) of the IPv4 socket on this network namespace whose local
// port is local and remote port remote, from /proc/net/tcp; ok is false
// when there is none (closed and gone). It skips the test where
// /proc/net/tcp cannot be read (not Linux).
func TCPState(t testing.TB, local, remote int) (state int, ok bool) {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("socket states unknown here: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// "sl local_address rem_address st ...", addresses as
		// HEXADDR:HEXPORT.
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || hexPort(fields[1]) != local || hexPort(fields[2]) != remote {
			continue
		}
		st, err := strconv.ParseUint(fields[3], 16, 8)
		if err != nil {
			t.Fatalf("/proc/net/tcp: state %q: %v", fields[3], err)
		}
		return int(st), true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("/proc/net/tcp: %v", err)
	}
	return 0, false
}

func hexPort(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return -1
	}
	n, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}
