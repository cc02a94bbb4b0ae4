package tlsconn

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// testAEAD returns the AEAD for k (test side, user space): AES-GCM or
// ChaCha20-Poly1305.
func testAEAD(t *testing.T, k *trafficKeys) cipher.AEAD {
	t.Helper()
	if !k.s.salted {
		a, err := chacha20poly1305.New(k.key[:k.s.keyLen])
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	b, err := aes.NewCipher(k.key[:k.s.keyLen])
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// xorNonce is the 12-byte iv XOR the left-padded seq: the TLS 1.3 nonce
// (RFC 8446 §5.3) and the TLS 1.2 ChaCha20-Poly1305 one (RFC 7905 §2).
func xorNonce(k *trafficKeys, seq [8]byte) []byte {
	nonce := append([]byte{}, k.iv[:12]...)
	for i := range seq {
		nonce[4+i] ^= seq[i]
	}
	return nonce
}

// sealRecord protects one record with k at k.seq (then increments it),
// per TLS 1.3 (RFC 8446 §5.2-5.3), TLS 1.2 GCM (RFC 5288) or TLS 1.2
// ChaCha20-Poly1305 (RFC 7905).
func sealRecord(t *testing.T, k *trafficKeys, typ byte, plain []byte) []byte {
	a := testAEAD(t, k)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], k.seq)
	k.seq++
	if k.version == tls.VersionTLS13 {
		inner := append(append([]byte{}, plain...), typ)
		n := len(inner) + a.Overhead()
		hdr := []byte{recordAppData, 3, 3, byte(n >> 8), byte(n)}
		return a.Seal(hdr, xorNonce(k, seq), inner, hdr)
	}
	aad := append(append([]byte{}, seq[:]...), typ, 3, 3, byte(len(plain)>>8), byte(len(plain)))
	if !k.s.salted { // ChaCha20-Poly1305: no nonce_explicit
		n := len(plain) + a.Overhead()
		return a.Seal([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, xorNonce(k, seq), plain, aad)
	}
	nonce := append(append([]byte{}, k.iv[:4]...), seq[:]...)
	n := 8 + len(plain) + a.Overhead()
	rec := append([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, seq[:]...)
	return a.Seal(rec, nonce, plain, aad)
}

// openRecord reads one record from r and opens it with k at k.seq.
func openRecord(t *testing.T, r io.Reader, k *trafficKeys) (byte, []byte, error) {
	a := testAEAD(t, k)
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], k.seq)
	k.seq++
	if k.version == tls.VersionTLS13 {
		inner, err := a.Open(nil, xorNonce(k, seq), body, hdr)
		if err != nil {
			return 0, nil, fmt.Errorf("open at seq %d: %w", k.seq-1, err)
		}
		inner = bytes.TrimRight(inner, "\x00")
		return inner[len(inner)-1], inner[:len(inner)-1], nil
	}
	nonce, e := xorNonce(k, seq), 0 // ChaCha20-Poly1305
	if k.s.salted {
		nonce, e = append(append([]byte{}, k.iv[:4]...), body[:8]...), 8
	}
	n := len(body) - e - a.Overhead()
	aad := append(append([]byte{}, seq[:]...), hdr[0], 3, 3, byte(n>>8), byte(n))
	plain, err := a.Open(nil, nonce, body[e:], aad)
	if err != nil {
		return 0, nil, fmt.Errorf("open at seq %d: %w", k.seq-1, err)
	}
	return hdr[0], plain, nil
}

// TestDerivedKeysMatchCryptoTLS runs real handshakes through handshakeConn,
// derives both directions' keys and sequence numbers exactly as offload
// does, and then speaks the record layer by hand against a crypto/tls
// peer: decrypt what it sends, encrypt what it reads. No kernel needed,
// so it checks keys, IVs and sequence numbers (TLS 1.3 tickets included)
// on every machine, for every TLS 1.2 suite kind (TLS 1.3 ChaCha20 keys
// are checked through RecordConn in TestRecordConnTLS13ChaCha20).
func TestDerivedKeysMatchCryptoTLS(t *testing.T) {
	checkLeaks(t)
	ca := newCA(t, "derive")
	cf, kf := ca.leaf(t, "d", []string{"d.test"}, false, false)
	cert, _ := tls.LoadX509KeyPair(cf, kf)
	cases := []struct {
		name   string
		max    uint16
		suites []uint16
	}{
		{"tls13", tls.VersionTLS13, nil},
		{"tls12-aes128", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
		{"tls12-aes256", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}},
		{"tls12-chacha20", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	}
	for _, c := range cases {
		for _, server := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/server=%v", c.name, server), func(t *testing.T) {
				ours, theirs := tcpPair(t)
				rc := newHandshakeConn(ours)
				var tc, peer *tls.Conn
				if server {
					s, err := NewServer(ServerConfig{CertFile: cf, KeyFile: kf})
					if err != nil {
						t.Fatal(err)
					}
					rc.ticketCfg = s.base
					tc = tls.Server(rc, s.base)
					peer = tls.Client(theirs, &tls.Config{RootCAs: poolOf(t, ca), ServerName: "d.test",
						MaxVersion: c.max, CipherSuites: c.suites,
						// A session cache makes the server issue a TLS 1.3
						// ticket, so the ticket count is exercised.
						ClientSessionCache: tls.NewLRUClientSessionCache(1)})
				} else {
					cl, _ := NewClient(ClientConfig{CAFile: ca.file}, "d.test")
					cfg := cl.cfg.Clone()
					cfg.KeyLogWriter = keyLogWriter{rc}
					tc = tls.Client(rc, cfg)
					peer = tls.Server(theirs, &tls.Config{Certificates: []tls.Certificate{cert},
						MaxVersion: c.max, CipherSuites: c.suites})
				}
				_ = ours.SetDeadline(time.Now().Add(testTimeout))
				_ = theirs.SetDeadline(time.Now().Add(testTimeout))
				errc := make(chan error, 1)
				go func() { errc <- peer.Handshake() }()
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				cs := tc.ConnectionState()
				s, ok := offloadable(cs.Version, cs.CipherSuite)
				if !ok {
					t.Fatalf("negotiated %s, not a supported suite", tls.CipherSuiteName(cs.CipherSuite))
				}
				tx, rx, ok := rc.directionKeys(s, cs.Version, server)
				if !ok {
					t.Fatal("keys not captured")
				}
				t.Logf("%s %s: tx seq %d, rx seq %d", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), tx.seq, rx.seq)
				if server && cs.Version == tls.VersionTLS13 && tx.seq != 1 {
					t.Errorf("server TLS 1.3 tx seq %d, want 1 (one ticket)", tx.seq)
				}
				go func() { _, err := peer.Write([]byte("from the peer")); errc <- err }()
				for {
					typ, plain, err := openRecord(t, ours, &rx)
					if err != nil {
						t.Fatal(err)
					}
					if typ == recordHandshake && !server {
						continue // a TLS 1.3 NewSessionTicket
					}
					if typ != recordAppData || string(plain) != "from the peer" {
						t.Fatalf("record type %d %q", typ, plain)
					}
					break
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if _, err := ours.Write(sealRecord(t, &tx, recordAppData, []byte("from us"))); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, err := peer.Read(buf)
				if err != nil || string(buf[:n]) != "from us" {
					t.Fatalf("peer read %q, %v", buf[:n], err)
				}
			})
		}
	}
}

// kernelTLS reports whether this kernel offloads; without it, a test
// skips (or fails under KTLS_REQUIRE=1, as in the VM run).
func kernelTLS(t *testing.T) bool {
	t.Helper()
	err := probe()
	if err == nil {
		return true
	}
	if os.Getenv("KTLS_REQUIRE") == "1" {
		t.Fatalf("KTLS_REQUIRE=1 but no kernel TLS: %v", err)
	}
	return false
}

func skipWithoutKTLS(t *testing.T) {
	t.Helper()
	if !kernelTLS(t) {
		err := probe()
		if errors.Is(err, syscall.ENOENT) {
			t.Skipf("no kernel TLS here: %v (setsockopt TCP_ULP tls: no tls module)", err)
		}
		t.Skipf("no kernel TLS here: %v", err)
	}
}

// TestOffloadAutoFallback runs everywhere: ModeAuto on both ends. Without
// kernel TLS (this development machine: TCP_ULP fails with ENOENT) both
// ends must keep working in crypto/tls and count the fallback.
func TestOffloadAutoFallback(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := NewClient(ClientConfig{CAFile: f.ca.file}, "default.test")
	sc, cc := handshakePair(t, s, cl)
	have := kernelTLS(t)
	for _, r := range []hsResult{sc, cc} {
		if have != r.info.Offloaded {
			t.Fatalf("kernel TLS %v but offloaded %v (%s)", have, r.info.Offloaded, r.info.Fallback)
		}
		if !have && (r.info.Fallback != FallbackNoKernel || r.tcp != nil) {
			t.Errorf("fallback %q tcp %v", r.info.Fallback, r.tcp)
		}
	}
	if have {
		t.Log("this kernel has TLS: both ends offloaded")
	} else {
		t.Logf("no kernel TLS here (%s): both ends fell back to crypto/tls, as designed", probe())
	}
	exchange(t, sc.conn, cc.conn, 64<<10)
	st := s.Stats()
	if have && st.Offloaded != 1 || !have && (st.Userspace != 1 || st.FallbackNoKernel != 1) || st.HandshakesOK != 1 {
		t.Errorf("server stats %+v", st)
	}

	// ModeOff: user space, counted as such.
	off, _ := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, Mode: ModeOff})
	sc, cc = handshakePair(t, off, cl)
	if sc.info.Offloaded || sc.info.Fallback != FallbackOff || off.Stats().FallbackOff != 1 {
		t.Errorf("ModeOff: %+v %+v", sc.info, off.Stats())
	}
	exchange(t, sc.conn, cc.conn, 1<<10)

	// ModeRequire without kernel TLS: an error, not a silent fallback.
	if !have {
		req, _ := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, Mode: ModeRequire})
		c, sv := tcpPair(t)
		ch := serveOnce(t, req, sv)
		_, _ = stdClient(t, c, &tls.Config{InsecureSkipVerify: true})
		if r := <-ch; !errors.Is(r.err, ErrOffloadRequired) {
			t.Errorf("ModeRequire: %v", r.err)
		}
	}
}

// handshakePair connects our Server and our Client over loopback.
func handshakePair(t *testing.T, s *Server, cl *Client) (server, client hsResult) {
	t.Helper()
	c, sv := tcpPair(t)
	ch := serveOnce(t, s, sv)
	conn, tcp, info, err := cl.Handshake(testCtx(t), c)
	client = hsResult{conn, tcp, info, err}
	server = <-ch
	if client.err != nil || server.err != nil {
		t.Fatalf("handshake: client %v, server %v", client.err, server.err)
	}
	return server, client
}

// exchange sends n random bytes each way at once, checks them byte for
// byte, then closes a and expects b to see EOF (close_notify), then
// closes b.
func exchange(t *testing.T, a, b net.Conn, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	ab, ba := make([]byte, n), make([]byte, n)
	_, _ = rand.Read(ab)
	_, _ = rand.Read(ba)
	errc := make(chan error, 4)
	send := func(c net.Conn, p []byte) {
		for off := 0; off < len(p); off += 50000 { // several writes, records of all sizes
			if _, err := c.Write(p[off:min(off+50000, len(p))]); err != nil {
				errc <- fmt.Errorf("write: %w", err)
				return
			}
		}
		errc <- nil
	}
	recv := func(c net.Conn, want []byte, dir string) {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			errc <- fmt.Errorf("%s: read: %w", dir, err)
			return
		}
		if !bytes.Equal(got, want) {
			errc <- fmt.Errorf("%s: received bytes differ", dir)
			return
		}
		errc <- nil
	}
	go send(a, ab)
	go send(b, ba)
	go recv(b, ab, "a->b")
	go recv(a, ba, "b->a")
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the peer's close_notify: n=%d err=%v, want EOF", n, err)
	}
	b.Close()
}
