package tlsconn

import (
	"bytes"
	"crypto/tls"
	"io"
	"testing"
	"time"
)

// ticketRound runs one handshake against s with cache and reports whether
// the session was resumed. The server writes a byte after the handshake
// so the client reads (and stores) the session tickets that precede it.
func ticketRound(t *testing.T, s *Server, ca *testCA, cache tls.ClientSessionCache) bool {
	t.Helper()
	c, sr := tcpPair(t)
	ch := serveOnce(t, s, sr)
	cl, err := stdClient(t, c, &tls.Config{RootCAs: poolOf(t, ca), ServerName: "localhost", ClientSessionCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	res := <-ch
	if res.err != nil {
		t.Fatal(res.err)
	}
	if _, err := res.conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	cl.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(cl, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	resumed := cl.ConnectionState().DidResume
	cl.Close()
	res.conn.Close()
	return resumed
}

// TestSessionTicketSeed: Servers given the same seed resume each other's
// sessions (several processes behind one port); different seeds, or none,
// do not; keys rotate with the clock and the last TicketKeysKept periods'
// tickets are accepted.
func TestSessionTicketSeed(t *testing.T) {
	checkLeaks(t)
	ca := newCA(t, "tickets")
	cert, key := ca.leaf(t, "localhost", []string{"localhost"}, false, false)
	seedA := bytes.Repeat([]byte{1}, SessionTicketSeedBytes)
	seedB := bytes.Repeat([]byte{2}, SessionTicketSeedBytes)
	newServer := func(seed []byte, at time.Time) *Server {
		t.Helper()
		s, err := NewServer(ServerConfig{CertFile: cert, KeyFile: key, SessionTicketSeed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if !at.IsZero() {
			s.now = func() time.Time { return at }
		}
		return s
	}
	day := TicketKeyRotation
	start := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name         string
		seedA, seedB []byte
		atB          time.Time
		want         bool
	}{
		{"same seed", seedA, seedA, start, true},
		{"same seed, a period later", seedA, seedA, start.Add(day), true},
		{"same seed, oldest period kept", seedA, seedA, start.Add((TicketKeysKept - 1) * day), true},
		{"same seed, past the kept periods", seedA, seedA, start.Add(TicketKeysKept * day), false},
		{"different seeds", seedA, seedB, start, false},
		{"no seed", nil, nil, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			atA := start
			if tc.seedA == nil {
				atA = time.Time{}
			}
			a, b := newServer(tc.seedA, atA), newServer(tc.seedB, tc.atB)
			cache := tls.NewLRUClientSessionCache(4)
			if ticketRound(t, a, ca, cache) {
				t.Fatal("the first handshake resumed a session")
			}
			if got := ticketRound(t, b, ca, cache); got != tc.want {
				t.Fatalf("second server resumed=%v, want %v", got, tc.want)
			}
		})
	}
	if _, err := NewServer(ServerConfig{CertFile: cert, KeyFile: key, SessionTicketSeed: seedA[:16]}); err == nil {
		t.Error("a 16-byte seed was accepted")
	}
}
