package tlsconn

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// ktlsCase is one negotiated version/cipher for the kTLS matrix.
type ktlsCase struct {
	name   string
	max    uint16
	suites []uint16 // TLS 1.2 only; TLS 1.3 suites are not configurable
	want   uint16   // expected suite; 0: whatever TLS 1.3 picks here
}

var ktlsCases = []ktlsCase{
	{"tls13", tls.VersionTLS13, nil, 0},
	{"tls12-aes128gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	{"tls12-aes256gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	{"tls12-chacha20", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
}

// TestKTLS: for each version/cipher, kTLS on both ends, then on one end
// against a user-space crypto/tls peer each way round; 1 MiB each way,
// byte-exact, ending with close_notify seen as EOF.
func TestKTLS(t *testing.T) {
	skipWithoutKTLS(t)
	runKTLSMatrix(t, ktlsCases)
}

// TestKTLS13ChaCha20: Go picks the TLS 1.3 suite by CPU (AES-GCM with AES
// hardware), so the ChaCha20 case runs in a child with GODEBUG=cpu.aes=off,
// which makes both ends prefer ChaCha20-Poly1305.
func TestKTLS13ChaCha20(t *testing.T) {
	if os.Getenv("TLSCONN_CHILD") == "chacha" {
		skipWithoutKTLS(t)
		runKTLSMatrix(t, []ktlsCase{{"tls13-chacha20", tls.VersionTLS13, nil, tls.TLS_CHACHA20_POLY1305_SHA256}})
		return
	}
	skipWithoutKTLS(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKTLS13ChaCha20$", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.aes=off", "TLSCONN_CHILD=chacha")
	out, err := cmd.CombinedOutput()
	t.Logf("child (GODEBUG=cpu.aes=off):\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
}

func runKTLSMatrix(t *testing.T, cases []ktlsCase) {
	ca := newCA(t, "ktls")
	cf, kf := ca.leaf(t, "k", []string{"k.test"}, false, false)
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name+"/both", func(t *testing.T) {
			checkLeaks(t)
			s, _ := NewServer(ServerConfig{CertFile: cf, KeyFile: kf, Mode: ModeRequire})
			cl, _ := NewClient(ClientConfig{CAFile: ca.file, Mode: ModeRequire}, "k.test")
			cl.cfg.MaxVersion, cl.cfg.CipherSuites = c.max, c.suites
			sr, cr := handshakePair(t, s, cl)
			checkOffloaded(t, c, sr, cr)
			exchange(t, sr.conn, cr.conn, 1<<20)
		})
		t.Run(c.name+"/server-kernel-client-userspace", func(t *testing.T) {
			checkLeaks(t)
			s, _ := NewServer(ServerConfig{CertFile: cf, KeyFile: kf, Mode: ModeRequire})
			c0, sv := tcpPair(t)
			ch := serveOnce(t, s, sv)
			peer, err := stdClient(t, c0, &tls.Config{RootCAs: poolOf(t, ca), ServerName: "k.test",
				MaxVersion: c.max, CipherSuites: c.suites, ClientSessionCache: tls.NewLRUClientSessionCache(4)})
			sr := <-ch
			if err != nil || sr.err != nil {
				t.Fatalf("handshake: client %v, server %v", err, sr.err)
			}
			checkOffloaded(t, c, sr)
			exchange(t, sr.conn, peer, 1<<20)
		})
		t.Run(c.name+"/client-kernel-server-userspace", func(t *testing.T) {
			checkLeaks(t)
			cl, _ := NewClient(ClientConfig{CAFile: ca.file, Mode: ModeRequire}, "k.test")
			c0, sv := tcpPair(t)
			peer := tls.Server(sv, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: c.max, CipherSuites: c.suites})
			errc := make(chan error, 1)
			go func() { errc <- peer.Handshake() }()
			conn, tcp, info, err := cl.Handshake(testCtx(t), c0)
			if perr := <-errc; err != nil || perr != nil {
				t.Fatalf("handshake: client %v, server %v", err, perr)
			}
			checkOffloaded(t, c, hsResult{conn, tcp, info, nil})
			// The user-space server sent a TLS 1.3 ticket: our kernel RX
			// path must skip it. Then the other direction closes first.
			exchange(t, peer, conn, 1<<20)
		})
	}
}

func checkOffloaded(t *testing.T, c ktlsCase, rs ...hsResult) {
	t.Helper()
	for _, r := range rs {
		if !r.info.Offloaded || r.tcp == nil {
			t.Fatalf("not offloaded: %s", r.info.Fallback)
		}
		if _, ok := r.conn.(*Conn); !ok {
			t.Fatalf("conn is %T", r.conn)
		}
		if r.info.Version != c.max || c.want != 0 && r.info.CipherSuite != c.want {
			t.Fatalf("negotiated %s %s", tls.VersionName(r.info.Version), tls.CipherSuiteName(r.info.CipherSuite))
		}
	}
	t.Logf("offloaded: %s %s", tls.VersionName(rs[0].info.Version), tls.CipherSuiteName(rs[0].info.CipherSuite))
}

// TestOffloadCryptoInfo covers what Go peers never negotiate (TLS 1.3
// AES-256-GCM) and every crypto_info layout: for each version and cipher,
// keys derived from a random secret go to TLS_TX on one socket and TLS_RX
// on the other; the kernel's records are also opened in user space with
// the RFC nonce rules, and user-space records fed to TLS_RX.
func TestOffloadCryptoInfo(t *testing.T) {
	skipWithoutKTLS(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, s := range []suite{suiteAES128, suiteAES256, suiteChaCha} {
			t.Run(fmt.Sprintf("%s/cipher%d", tls.VersionName(v), s.kernelCipher), func(t *testing.T) {
				checkLeaks(t)
				k := randomKeys(t, v, s)
				a, b := tcpPair(t)
				ka, _, err := enableKTLS(a, &k, &k)
				kb, _, err2 := enableKTLS(b, &k, &k)
				if ka == nil || kb == nil {
					t.Fatalf("enableKTLS: %v %v", err, err2)
				}
				exchange(t, ka, kb, 1<<20)
				a, b = tcpPair(t)
				tx := randomKeys(t, v, s)
				ka, _, err = enableKTLS(a, &tx, &tx)
				if ka == nil {
					t.Fatal(err)
				}
				defer ka.Close()
				if _, err := ka.Write([]byte("kernel sealed")); err != nil {
					t.Fatal(err)
				}
				user, sealer := tx, tx // each kernel direction has its own seq
				_ = b.SetDeadline(time.Now().Add(testTimeout))
				typ, plain, err := openRecord(t, b, &user)
				if err != nil || typ != recordAppData || string(plain) != "kernel sealed" {
					t.Fatalf("user-space open of a kernel record: %d %q %v", typ, plain, err)
				}
				if _, err := b.Write(sealRecord(t, &sealer, recordAppData, []byte("user sealed"))); err != nil {
					t.Fatal(err)
				}
				_ = ka.SetDeadline(time.Now().Add(testTimeout))
				buf := make([]byte, 64)
				n, err := ka.Read(buf)
				if err != nil || string(buf[:n]) != "user sealed" {
					t.Fatalf("kernel RX of a user-space record: %q %v", buf[:n], err)
				}
				// A NewSessionTicket is skipped, a KeyUpdate is an error.
				nst := []byte{handshakeNewSessionTicket, 0, 0, 3, 1, 2, 3}
				rec := sealRecord(t, &sealer, recordHandshake, nst)
				rec = append(rec, sealRecord(t, &sealer, recordAppData, []byte("after ticket"))...)
				rec = append(rec, sealRecord(t, &sealer, recordHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 0})...)
				if _, err := b.Write(rec); err != nil {
					t.Fatal(err)
				}
				n, err = ka.Read(buf)
				if err != nil || string(buf[:n]) != "after ticket" {
					t.Fatalf("read past a ticket: %q %v", buf[:n], err)
				}
				if _, err := ka.Read(buf); err != errKeyUpdate {
					t.Fatalf("KeyUpdate: %v", err)
				}
			})
		}
	}
}

func randomKeys(t *testing.T, v uint16, s suite) trafficKeys {
	k := trafficKeys{version: v, s: s, seq: 5}
	if _, err := rand.Read(k.key[:]); err != nil {
		t.Fatal(err)
	}
	_, _ = rand.Read(k.iv[:])
	return k
}

var _ io.ReaderFrom = (*Conn)(nil)
var _ net.Conn = (*Conn)(nil)
