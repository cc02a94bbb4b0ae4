//go:build !race

package sockio

import (
	"io"
	"net"
	"testing"
)

func TestNoAllocs(t *testing.T) {
	c, peer := pair(t)
	checkRoundTripAllocs(t, c, peer)
}

// checkRoundTripAllocs pins 0 allocations per small round trip on c.
func checkRoundTripAllocs(t *testing.T, c *Conn, peer net.Conn) {
	t.Helper()
	msg := []byte("ping")
	buf := make([]byte, 16)
	n := testing.AllocsPerRun(1000, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per round trip", n)
	}
}

func TestWriteTwoNoAllocs(t *testing.T) {
	c, peer := pair(t)
	head, body := []byte("head"), []byte("body")
	buf := make([]byte, 16)
	n := testing.AllocsPerRun(1000, func() {
		if _, err := c.WriteTwo(head, body); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:8]); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per WriteTwo", n)
	}
}
