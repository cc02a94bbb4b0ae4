package tlsconn

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"testing"
	"time"
)

// randomRecordPair is two RecordConns over loopback on random keys (and,
// for TLS 1.3, random traffic secrets): a is the server, b the client.
func randomRecordPair(t *testing.T, version uint16, s suite) (a, b *RecordConn) {
	t.Helper()
	ca, cb := tcpPair(t)
	var ka, kb trafficKeys
	var secA, secB []byte
	if version == tls.VersionTLS13 {
		n := s.hash().Size()
		secA, secB = make([]byte, n), make([]byte, n)
		_, _ = rand.Read(secA)
		_, _ = rand.Read(secB)
		var err error
		if ka, err = keysTLS13(s, secA, 0); err != nil {
			t.Fatal(err)
		}
		if kb, err = keysTLS13(s, secB, 0); err != nil {
			t.Fatal(err)
		}
	} else {
		ka, kb = randomKeys(t, version, s), randomKeys(t, version, s)
	}
	var err error
	if a, err = newRecordConn(ca, true, &ka, &kb, secA, secB); err != nil {
		t.Fatal(err)
	}
	if b, err = newRecordConn(cb, false, &kb, &ka, secB, secA); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestRecordConnRandomKeys covers every supported version and suite on
// both ends, TLS 1.3 AES-256-GCM included (Go peers never pick it) and
// ChaCha20-Poly1305:
// 1 MiB each way, then close_notify.
func TestRecordConnRandomKeys(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, s := range []suite{suiteAES128, suiteAES256, suiteChaCha} {
			t.Run(fmt.Sprintf("%s/cipher%d", tls.VersionName(v), s.kernelCipher), func(t *testing.T) {
				checkLeaks(t)
				a, b := randomRecordPair(t, v, s)
				exchange(t, a, b, 1<<20)
			})
		}
	}
}

// TestRecordConnKeyUpdateCryptoTLS: we send KeyUpdate(update_requested)
// to a crypto/tls client, which follows our new key and answers with its
// own KeyUpdate, which we follow: both ratchets checked against
// crypto/tls.
func TestRecordConnKeyUpdateCryptoTLS(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	rc, peer, _ := recordServer(t, f.server(t, false), f.clientConfig(t, tls.VersionTLS13, nil))
	_ = peer.SetDeadline(time.Now().Add(testTimeout))
	_ = rc.SetDeadline(time.Now().Add(testTimeout))
	oldRx := rc.rx.secret
	for round := range 3 {
		rc.wmu.Lock()
		err := rc.sendKeyUpdateLocked(true)
		rc.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Write([]byte("after our update")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, err := peer.Read(buf); err != nil || string(buf[:n]) != "after our update" {
			t.Fatalf("round %d: peer read %q %v", round, buf[:n], err)
		}
		if _, err := peer.Write([]byte("after its update")); err != nil {
			t.Fatal(err)
		}
		if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "after its update" {
			t.Fatalf("round %d: read %q %v", round, buf[:n], err)
		}
		if rc.rx.secret == oldRx || rc.rx.k.seq != 1 || rc.tx.k.seq != 1 {
			t.Fatalf("round %d: rx not updated or seqs %d/%d", round, rc.rx.k.seq, rc.tx.k.seq)
		}
		oldRx = rc.rx.secret
	}
	// Our own rekey after keyUpdateRecords (lowered here).
	rc.wmu.Lock()
	rc.rekeyAt = rc.tx.k.seq + 2
	rc.wmu.Unlock()
	for i := range 5 {
		if _, err := rc.Write([]byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 5)
	for n := 0; n < 5; {
		m, err := peer.Read(got[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if string(got) != "01234" || rc.tx.k.seq >= 5 {
		t.Fatalf("after our own rekey: %q, tx seq %d", got, rc.tx.k.seq)
	}
}

// TestRecordConnKeyUpdateFromPeer: a hand-crafted client (the test's own
// sealer, keyed from what the server holds) sends KeyUpdate, whole or in
// two records, with update_requested: the server follows and sends its
// own KeyUpdate before its next data record. Malformed ones are refused.
func TestRecordConnKeyUpdateFromPeer(t *testing.T) {
	f := newRecordFixture(t)
	s := f.server(t, false)
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "whole", true: "fragmented"}[split], func(t *testing.T) {
			checkLeaks(t)
			rc, _, raw := recordServer(t, s, f.clientConfig(t, tls.VersionTLS13, nil))
			_ = raw.SetDeadline(time.Now().Add(testTimeout))
			cli, srv := rc.rx, rc.tx // the client's view of both directions
			ku := []byte{handshakeKeyUpdate, 0, 0, 1, 1}
			var recs []byte
			if split {
				recs = sealRecord(t, &cli.k, recordHandshake, ku[:2])
				recs = append(recs, sealRecord(t, &cli.k, recordHandshake, ku[2:])...)
			} else {
				recs = sealRecord(t, &cli.k, recordHandshake, ku)
			}
			if err := cli.update(); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, sealRecord(t, &cli.k, recordAppData, []byte("new key"))...)
			_, _ = raw.Write(recs)
			buf := make([]byte, 64)
			_ = rc.SetDeadline(time.Now().Add(testTimeout))
			if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "new key" {
				t.Fatalf("read %q %v", buf[:n], err)
			}
			if _, err := rc.Write([]byte("answer")); err != nil {
				t.Fatal(err)
			}
			// The server's NewSessionTicket came first, at seq 0.
			for {
				typ, plain, err := openRecord(t, raw, &srv.k)
				if err != nil {
					t.Fatal(err)
				}
				if typ == recordHandshake && plain[0] == handshakeNewSessionTicket {
					continue
				}
				if typ != recordHandshake || string(plain) != string([]byte{handshakeKeyUpdate, 0, 0, 1, 0}) {
					t.Fatalf("want KeyUpdate(update_not_requested) first, got type %d %x", typ, plain)
				}
				break
			}
			if err := srv.update(); err != nil {
				t.Fatal(err)
			}
			if typ, plain, err := openRecord(t, raw, &srv.k); err != nil || typ != recordAppData || string(plain) != "answer" {
				t.Fatalf("after the server's KeyUpdate: %d %q %v", typ, plain, err)
			}
		})
	}
	bad := []struct {
		name string
		recs [][]byte
		want error
	}{
		{"data-after-keyupdate", [][]byte{{handshakeKeyUpdate, 0, 0, 1, 0, 'x'}}, errKeyUpdateSpan},
		{"bad-request", [][]byte{{handshakeKeyUpdate, 0, 0, 1, 2}}, errKeyUpdateValue},
		{"bad-length", [][]byte{{handshakeKeyUpdate, 0, 0, 2, 0, 0}}, errKeyUpdateSize},
		{"unknown-message", [][]byte{{handshakeClientHello, 0, 0, 0}}, errPostHandshake},
		{"empty-fragment", [][]byte{{}}, errPostHandshake},
		{"interleaved", [][]byte{{handshakeKeyUpdate, 0}, nil}, errInterleaved},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			checkLeaks(t)
			rc, _, raw := recordServer(t, s, f.clientConfig(t, tls.VersionTLS13, nil))
			k := peerKeys(rc)
			var recs []byte
			for i, p := range c.recs {
				typ := byte(recordHandshake)
				if c.name == "interleaved" && i == 1 {
					typ, p = recordAppData, []byte("data")
				}
				recs = append(recs, sealRecord(t, &k, typ, p)...)
			}
			_, _ = raw.Write(recs)
			expectReadErr(t, rc, c.want)
		})
	}
}

// TestOffloadRecordConnPeer checks the user-space record layer against
// an independent implementation, the kernel's: kernel TLS on one end, a
// RecordConn on the other, every version and suite (AES-GCM both key
// sizes, ChaCha20-Poly1305), 1 MiB each way and close_notify each way
// round. It needs the tls module (it runs in scripts/ktls-vm-test.sh).
func TestOffloadRecordConnPeer(t *testing.T) {
	skipWithoutKTLS(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, s := range []suite{suiteAES128, suiteAES256, suiteChaCha} {
			for _, kernelCloses := range []bool{true, false} {
				name := fmt.Sprintf("%s/cipher%d/kernel-closes=%v", tls.VersionName(v), s.kernelCipher, kernelCloses)
				t.Run(name, func(t *testing.T) {
					checkLeaks(t)
					a, b := tcpPair(t)
					ka, kb := randomKeys(t, v, s), randomKeys(t, v, s)
					kc, _, err := enableKTLS(a, &ka, &kb)
					if kc == nil {
						t.Fatalf("enableKTLS: %v", err)
					}
					rc, err := newRecordConn(b, true, &kb, &ka, nil, nil)
					if err != nil {
						t.Fatal(err)
					}
					if kernelCloses {
						exchange(t, kc, rc, 1<<20)
					} else {
						exchange(t, rc, kc, 1<<20)
					}
				})
			}
		}
	}
}
