//go:build !race

package tlsconn

import (
	"testing"
)

// TestOffloadNoAllocs pins the kernel TLS data path at zero allocations
// per Read and Write (recvmsg with the Conn's own cmsg buffer).
func TestOffloadNoAllocs(t *testing.T) {
	skipWithoutKTLS(t)
	k := randomKeys(t, 0x0304, suiteAES128)
	a, b := tcpPair(t)
	ka, _, err := enableKTLS(a, &k, &k)
	if err != nil || ka == nil {
		t.Fatal(err)
	}
	kb, _, err := enableKTLS(b, &k, &k)
	if err != nil || kb == nil {
		t.Fatal(err)
	}
	defer ka.Close()
	defer kb.Close()
	msg, buf := []byte("sixteen bytes!!!"), make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ka.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := kb.Read(buf); err != nil || n != len(msg) {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Write+Read, want 0", allocs)
	}
}
