package tlsconn

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recordFixture is a Server (ModeOff: the record layer is tested the same
// with or without a tls module) and what a crypto/tls client needs.
type recordFixture struct {
	ca     *testCA
	cf, kf string
}

func newRecordFixture(t *testing.T) *recordFixture {
	ca := newCA(t, "records")
	cf, kf := ca.leaf(t, "r", []string{"r.test"}, false, false)
	return &recordFixture{ca, cf, kf}
}

func (f *recordFixture) server(t *testing.T, cryptoTLS bool) *Server {
	s, err := NewServer(ServerConfig{CertFile: f.cf, KeyFile: f.kf, Mode: ModeOff, CryptoTLSRecords: cryptoTLS})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *recordFixture) clientConfig(t *testing.T, max uint16, suites []uint16) *tls.Config {
	return &tls.Config{RootCAs: poolOf(t, f.ca), ServerName: "r.test", MaxVersion: max, CipherSuites: suites,
		// A session cache makes a TLS 1.3 server send a ticket under its
		// application key: the first sequence number is then 1.
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}
}

// serveStd handshakes a crypto/tls client (config tc) with s.
func serveStd(t *testing.T, s *Server, tc *tls.Config) (hsResult, *tls.Conn, *net.TCPConn) {
	t.Helper()
	c0, sv := tcpPair(t)
	ch := serveOnce(t, s, sv)
	peer, err := stdClient(t, c0, tc)
	r := <-ch
	if err != nil || r.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, r.err)
	}
	t.Cleanup(func() { peer.Close(); r.conn.Close() })
	return r, peer, c0
}

// recordServer is serveStd that insists on a RecordConn.
func recordServer(t *testing.T, s *Server, tc *tls.Config) (*RecordConn, *tls.Conn, *net.TCPConn) {
	t.Helper()
	r, peer, raw := serveStd(t, s, tc)
	rc, ok := r.conn.(*RecordConn)
	if !ok || r.info.Path != PathRecords || r.tcp != nil {
		t.Fatalf("conn %T path %s (%s), tcp %v", r.conn, r.info.Path, r.info.CryptoTLSReason, r.tcp)
	}
	t.Logf("user-space records: %s %s", tls.VersionName(r.info.Version), tls.CipherSuiteName(r.info.CipherSuite))
	return rc, peer, raw
}

// recordCases are the negotiated suites every handshake-based record test
// runs. TLS 1.3 ChaCha20-Poly1305 needs GODEBUG=cpu.aes=off, so it has a
// child process of its own (TestRecordConnTLS13ChaCha20), in which this
// list is just that suite.
var recordCases = []ktlsCase{
	{"tls13-aes128gcm", tls.VersionTLS13, nil, tls.TLS_AES_128_GCM_SHA256},
	{"tls12-aes128gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	{"tls12-aes256gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	{"tls12-chacha20", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
}

// chacha13Child: this process is TestRecordConnTLS13ChaCha20's child.
const chacha13Child = "records-chacha13"

func init() {
	if os.Getenv("TLSCONN_CHILD") == chacha13Child {
		recordCases = []ktlsCase{{"tls13-chacha20", tls.VersionTLS13, nil, tls.TLS_CHACHA20_POLY1305_SHA256}}
	}
}

// TestRecordConnInterop: a crypto/tls client against our server's
// RecordConn, per version and suite: 1 MiB each way byte-exact,
// closing each way round (close_notify read as EOF on the other side).
func TestRecordConnInterop(t *testing.T) {
	f := newRecordFixture(t)
	s := f.server(t, false)
	for _, c := range recordCases {
		t.Run(c.name+"/server-closes", func(t *testing.T) {
			checkLeaks(t)
			rc, peer, _ := recordServer(t, s, f.clientConfig(t, c.max, c.suites))
			if peer.ConnectionState().CipherSuite != c.want {
				t.Fatalf("negotiated %s", tls.CipherSuiteName(peer.ConnectionState().CipherSuite))
			}
			exchange(t, rc, peer, 1<<20)
		})
		t.Run(c.name+"/client-closes", func(t *testing.T) {
			checkLeaks(t)
			rc, peer, _ := recordServer(t, s, f.clientConfig(t, c.max, c.suites))
			exchange(t, peer, rc, 1<<20)
		})
	}
	st := s.Stats()
	if st.UserspaceRecords != uint64(2*len(recordCases)) || st.CryptoTLS != 0 || st.Userspace != st.UserspaceRecords {
		t.Errorf("stats %+v", st)
	}
}

// countingConn counts Write calls (one per record for a RecordConn).
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestRecordConnWrites: many small writes arrive in order; a write of
// maxPlaintext bytes is one record and one syscall, maxPlaintext+1 two.
func TestRecordConnWrites(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	for _, c := range recordCases {
		t.Run(c.name, func(t *testing.T) {
			rc, peer, _ := recordServer(t, f.server(t, false), f.clientConfig(t, c.max, c.suites))
			cc := &countingConn{Conn: rc.conn}
			rc.conn = cc
			_ = peer.SetDeadline(time.Now().Add(testTimeout))
			var want bytes.Buffer
			for i := range 1000 {
				msg := fmt.Appendf(nil, "small write %d;", i)
				want.Write(msg)
				if _, err := rc.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, want.Len())
			if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("small writes: %v", err)
			}
			for _, n := range []int{maxPlaintext, maxPlaintext + 1} {
				before := cc.writes.Load()
				big := make([]byte, n)
				_, _ = rand.Read(big)
				go func() { _, _ = rc.Write(big) }()
				got := make([]byte, n)
				if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, big) {
					t.Fatalf("%d-byte write: %v", n, err)
				}
				wantRecs := int64(1 + n/(maxPlaintext+1))
				if w := cc.writes.Load() - before; w != wantRecs {
					t.Errorf("%d-byte write: %d records/syscalls, want %d", n, w, wantRecs)
				}
			}
		})
	}
}

// TestRecordConnFallbacks: ChaCha20-Poly1305 (TLS 1.2 here; TLS 1.3 in
// TestRecordConnTLS13ChaCha20) takes RecordConn like AES-GCM, counted as
// such; CryptoTLSRecords keeps crypto/tls, with the reason counted.
func TestRecordConnFallbacks(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	s := f.server(t, false)
	chacha := []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	r, peer, _ := serveStd(t, s, f.clientConfig(t, tls.VersionTLS12, chacha))
	if _, ok := r.conn.(*RecordConn); !ok || r.info.Path != PathRecords || r.info.CryptoTLSReason != CryptoTLSNone ||
		r.info.CipherSuite != chacha[0] {
		t.Fatalf("chacha20: %T %s %s %s", r.conn, r.info.Path, r.info.CryptoTLSReason, tls.CipherSuiteName(r.info.CipherSuite))
	}
	exchange(t, r.conn, peer, 64<<10)
	off := f.server(t, true)
	r, peer, _ = serveStd(t, off, f.clientConfig(t, tls.VersionTLS13, nil))
	if _, ok := r.conn.(*CryptoConn); !ok || r.info.CryptoTLSReason != CryptoTLSOff {
		t.Fatalf("CryptoTLSRecords: %T %s", r.conn, r.info.CryptoTLSReason)
	}
	exchange(t, peer, r.conn, 64<<10)
	if st := s.Stats(); st.UserspaceRecords != 1 || st.CryptoTLS != 0 || st.CryptoTLSCipher != 0 || st.FallbackOff != 1 {
		t.Errorf("stats %+v", st)
	}
	if st := off.Stats(); st.CryptoTLS != 1 || st.CryptoTLSOff != 1 || st.UserspaceRecords != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRecordConnTLS13ChaCha20: with GODEBUG=cpu.aes=off both ends prefer
// ChaCha20-Poly1305 in TLS 1.3, which takes RecordConn. The child runs
// every TestRecordConn* test with recordCases set to TLS 1.3 ChaCha20
// (interop, record sizes, bad input, zero allocations outside -race) and
// with it as what TLS 1.3 negotiates (KeyUpdate against crypto/tls
// included).
func TestRecordConnTLS13ChaCha20(t *testing.T) {
	if os.Getenv("TLSCONN_CHILD") == chacha13Child {
		checkLeaks(t)
		f := newRecordFixture(t)
		rc, peer, _ := recordServer(t, f.server(t, false), f.clientConfig(t, tls.VersionTLS13, nil))
		if cs := peer.ConnectionState(); cs.CipherSuite != tls.TLS_CHACHA20_POLY1305_SHA256 {
			t.Fatalf("negotiated %s", tls.CipherSuiteName(cs.CipherSuite))
		}
		exchange(t, rc, peer, 1<<20)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRecordConn", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.aes=off", "TLSCONN_CHILD="+chacha13Child)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child (GODEBUG=cpu.aes=off): %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) { // the summary: results and allocation figures
		if strings.HasPrefix(line, "--- ") || strings.Contains(line, "allocations per") {
			t.Logf("child: %s", strings.TrimSpace(line))
		}
	}
}

// peerKeys is the crypto/tls client's sending state as the server sees
// it, to craft records the client could have sent.
func peerKeys(rc *RecordConn) trafficKeys { return rc.rx.k }

// expectReadErr reads from rc and wants want (errors.Is).
func expectReadErr(t *testing.T, rc *RecordConn, want error) {
	t.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := rc.Read(make([]byte, 64))
	if !errors.Is(err, want) {
		t.Fatalf("Read: n=%d err=%v, want %v", n, err, want)
	}
	if _, err2 := rc.Read(make([]byte, 1)); err2 != err {
		t.Errorf("error not sticky: %v then %v", err, err2)
	}
}

// expectAlert wants the peer to read a fatal alert from us.
func expectAlert(t *testing.T, peer *tls.Conn, alert string) {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := peer.Read(make([]byte, 64))
	if err == nil || !strings.Contains(err.Error(), alert) {
		t.Errorf("peer read %v, want alert %q", err, alert)
	}
}

// TestRecordConnBadInput: what a peer may send wrong after the
// handshake, for each version, and the alert it gets back.
func TestRecordConnBadInput(t *testing.T) {
	f := newRecordFixture(t)
	s := f.server(t, false)
	for _, c := range recordCases {
		v13 := c.max == tls.VersionTLS13
		run := func(name string, fn func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn)) {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				checkLeaks(t)
				rc, peer, raw := recordServer(t, s, f.clientConfig(t, c.max, c.suites))
				fn(t, rc, peer, raw)
			})
		}
		run("corrupted", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			rec := sealRecord(t, &k, recordAppData, []byte("GET / HTTP/1.1\r\n"))
			rec[len(rec)-20] ^= 0x40
			_, _ = raw.Write(rec)
			expectReadErr(t, rc, errBadRecordMAC)
			expectAlert(t, peer, "bad record MAC")
		})
		run("oversized", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			n := ciphertextMax12 + 1
			if v13 {
				n = ciphertextMax13 + 1
			}
			_, _ = raw.Write([]byte{recordAppData, 3, 3, byte(n >> 8), byte(n)})
			expectReadErr(t, rc, errRecordOverflow)
			expectAlert(t, peer, "record overflow")
		})
		run("plaintext-too-long", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			_, _ = raw.Write(sealRecord(t, &k, recordAppData, make([]byte, maxPlaintext+1)))
			expectReadErr(t, rc, errRecordOverflow)
		})
		run("handshake-after-handshake", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			msg := []byte{handshakeClientHello, 0, 0, 2, 3, 3} // renegotiation (1.2) or junk (1.3)
			want := errRenegotiation
			if v13 {
				msg, want = []byte{handshakeNewSessionTicket, 0, 0, 1, 0}, errClientTicket
			}
			_, _ = raw.Write(sealRecord(t, &k, recordHandshake, msg))
			expectReadErr(t, rc, want)
			expectAlert(t, peer, map[bool]string{true: "unexpected message", false: "handshake failure"}[v13])
		})
		run("change-cipher-spec", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			_, _ = raw.Write([]byte{20, 3, 3, 0, 1, 1})
			expectReadErr(t, rc, errRecordType)
		})
		run("wrong-version", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			_, _ = raw.Write([]byte{recordAppData, 3, 1, 0, 20})
			expectReadErr(t, rc, errRecordVersion)
		})
		run("empty-records", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			var recs []byte
			for range controlRecordsPerReadMax - 1 {
				recs = append(recs, sealRecord(t, &k, recordAppData, nil)...)
			}
			recs = append(recs, sealRecord(t, &k, recordAppData, []byte("data"))...)
			for range controlRecordsPerReadMax {
				recs = append(recs, sealRecord(t, &k, recordAppData, nil)...)
			}
			_, _ = raw.Write(recs)
			buf := make([]byte, 16)
			if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "data" {
				t.Fatalf("after empty records: %q %v", buf[:n], err)
			}
			expectReadErr(t, rc, errControlFlood)
		})
		run("alerts", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			skipped := []byte{alertLevelWarning, 100} // TLS 1.2 warning: no_renegotiation
			if v13 {
				skipped = []byte{alertLevelWarning, alertUserCanceled}
			}
			recs := sealRecord(t, &k, recordAlert, skipped)
			recs = append(recs, sealRecord(t, &k, recordAppData, []byte("still here"))...)
			recs = append(recs, sealRecord(t, &k, recordAlert, []byte{alertLevelFatal, alertInternalError})...)
			_, _ = raw.Write(recs)
			buf := make([]byte, 16)
			if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "still here" {
				t.Fatalf("after a warning alert: %q %v", buf[:n], err)
			}
			expectReadErr(t, rc, AlertError(alertInternalError))
		})
		run("truncated", func(t *testing.T, rc *RecordConn, peer *tls.Conn, raw *net.TCPConn) {
			k := peerKeys(rc)
			rec := sealRecord(t, &k, recordAppData, []byte("cut short"))
			_, _ = raw.Write(rec[:len(rec)-3])
			_ = raw.CloseWrite()
			expectReadErr(t, rc, io.ErrUnexpectedEOF)
		})
	}
}

// TestRecordConnPartialAndTimeout: a record arriving in pieces across a
// read timeout is still read whole; the timeout is not sticky.
func TestRecordConnPartialAndTimeout(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	rc, _, raw := recordServer(t, f.server(t, false), f.clientConfig(t, tls.VersionTLS13, nil))
	k := peerKeys(rc)
	rec := sealRecord(t, &k, recordAppData, []byte("in pieces"))
	_, _ = raw.Write(rec[:3])
	_ = rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 32)
	var ne net.Error
	if _, err := rc.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
	_, _ = raw.Write(rec[3:10])
	_ = rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := rc.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
	_, _ = raw.Write(rec[10:])
	_ = rc.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "in pieces" {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

// TestRecordConnCloseWipes: Close sends close_notify and zeroes the keys;
// later calls fail cleanly.
func TestRecordConnCloseWipes(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	rc, peer, _ := recordServer(t, f.server(t, false), f.clientConfig(t, tls.VersionTLS13, nil))
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read %v, want EOF (close_notify)", err)
	}
	for _, d := range []*direction{&rc.tx, &rc.rx} {
		if d.aead != nil || d.k.key != [keyBytesMax]byte{} || d.k.iv != [ivBytesMax]byte{} ||
			d.secret.b != [secretBytesMax]byte{} {
			t.Error("keys not wiped")
		}
	}
	if _, err := rc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if err := rc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestRecordConnCloseWrite: half-close sends close_notify, the peer can
// still answer.
func TestRecordConnCloseWrite(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	rc, peer, _ := recordServer(t, f.server(t, false), f.clientConfig(t, tls.VersionTLS12, nil))
	if err := rc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetDeadline(time.Now().Add(testTimeout))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read %v, want EOF", err)
	}
	if _, err := peer.Write([]byte("late answer")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	_ = rc.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := rc.Read(buf); err != nil || string(buf[:n]) != "late answer" {
		t.Errorf("%q %v", buf[:n], err)
	}
	if _, err := rc.Write([]byte("x")); !errors.Is(err, errWriteShutdown) {
		t.Errorf("Write after CloseWrite: %v", err)
	}
}

// TestRecordConnSeqExhausted: a direction at the last sequence number
// refuses to seal rather than wrap.
func TestRecordConnSeqExhausted(t *testing.T) {
	checkLeaks(t)
	f := newRecordFixture(t)
	for _, c := range recordCases {
		rc, _, _ := recordServer(t, f.server(t, false), f.clientConfig(t, c.max, c.suites))
		rc.wmu.Lock()
		rc.tx.k.seq, rc.rekeyAt = seqMax, seqMax
		rc.wmu.Unlock()
		if _, err := rc.Write([]byte("x")); !errors.Is(err, errSeqExhausted) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
