//go:build !race

package tlsconn

import (
	"crypto/tls"
	"testing"
)

// recordHandshakePair handshakes our Client and Server with both ends on
// RecordConn. The client end is test-only: origination stays on
// crypto/tls in production (it must keep processing session tickets).
func recordHandshakePair(t *testing.T, f *recordFixture, c ktlsCase) (srv, cli *RecordConn) {
	t.Helper()
	cl, err := NewClient(ClientConfig{CAFile: f.ca.file, Mode: ModeOff, SessionCacheSize: -1}, "r.test")
	if err != nil {
		t.Fatal(err)
	}
	cl.ep.cryptoTLS = CryptoTLSNone
	cl.cfg.MaxVersion, cl.cfg.CipherSuites = c.max, c.suites
	sr, cr := handshakePair(t, f.server(t, false), cl)
	srv, ok1 := sr.conn.(*RecordConn)
	cli, ok2 := cr.conn.(*RecordConn)
	if !ok1 || !ok2 {
		t.Fatalf("server %T (%s), client %T (%s)", sr.conn, sr.info.CryptoTLSReason, cr.conn, cr.info.CryptoTLSReason)
	}
	if sr.info.CipherSuite != c.want {
		t.Fatalf("negotiated %s", tls.CipherSuiteName(sr.info.CipherSuite))
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

// TestRecordConnNoAllocs pins the user-space record layer at zero
// allocations per Read and Write: a 1 KiB request and a 1 KiB response
// on an established connection, both ends RecordConn after a real
// handshake, per version and suite (TLS 1.3 ChaCha20-Poly1305 in
// TestRecordConnTLS13ChaCha20's child). ChaCha20-Poly1305 holds at 0 on
// x/crypto's assembly and generic code alike (GODEBUG=cpu.avx2=off on
// amd64), but not under -tags purego, where x/crypto moves a 32-byte
// Poly1305 key to the heap per record.
func TestRecordConnNoAllocs(t *testing.T) {
	f := newRecordFixture(t)
	for _, c := range recordCases {
		t.Run(c.name, func(t *testing.T) {
			srv, cli := recordHandshakePair(t, f, c)
			msg, buf := make([]byte, 1024), make([]byte, 2048)
			roundTrip := func() {
				if _, err := cli.Write(msg); err != nil {
					t.Fatal(err)
				}
				for n := 0; n < len(msg); {
					m, err := srv.Read(buf)
					if err != nil {
						t.Fatal(err)
					}
					n += m
				}
				if _, err := srv.Write(msg); err != nil {
					t.Fatal(err)
				}
				for n := 0; n < len(msg); {
					m, err := cli.Read(buf)
					if err != nil {
						t.Fatal(err)
					}
					n += m
				}
			}
			roundTrip() // the client skips the server's TLS 1.3 ticket here
			allocs := testing.AllocsPerRun(1000, roundTrip)
			t.Logf("%v allocations per 1 KiB round trip", allocs)
			if allocs != 0 {
				t.Errorf("%v allocations per 1 KiB round trip (2 Writes, 2+ Reads), want 0", allocs)
			}
		})
	}
}
