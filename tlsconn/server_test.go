package tlsconn

import (
	"crypto/tls"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// sniFixture: a default cert, an exact-name cert (RSA) and a wildcard.
type sniFixture struct {
	ca                     *testCA
	def, exact, wild       CertPair
	defCN, exactCN, wildCN string
}

func newSNIFixture(t *testing.T) *sniFixture {
	f := &sniFixture{ca: newCA(t, "sni"), defCN: "default", exactCN: "api.example.com", wildCN: "*.example.com"}
	f.def.CertFile, f.def.KeyFile = f.ca.leaf(t, f.defCN, []string{"default.test"}, false, false)
	f.exact.CertFile, f.exact.KeyFile = f.ca.leaf(t, f.exactCN, []string{"api.example.com"}, true, false)
	f.wild.CertFile, f.wild.KeyFile = f.ca.leaf(t, f.wildCN, []string{"*.example.com"}, false, false)
	return f
}

// handshakeCN runs one handshake against s with cfg and returns the
// common name of the certificate the server chose.
func handshakeCN(t *testing.T, s *Server, cfg *tls.Config) (string, hsResult, error) {
	t.Helper()
	c, sv := tcpPair(t)
	ch := serveOnce(t, s, sv)
	tc, err := stdClient(t, c, cfg)
	res := <-ch
	if res.conn != nil {
		t.Cleanup(func() { res.conn.Close() })
	}
	if err != nil {
		return "", res, err
	}
	defer tc.Close()
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName, res, nil
}

func TestSNISelection(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile,
		Certs: []CertPair{f.exact, f.wild}, Mode: ModeOff})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ sni, want string }{
		{"api.example.com", f.exactCN}, // exact beats wildcard
		{"API.Example.COM", f.exactCN}, // case-insensitive
		{"www.example.com", f.wildCN},  // wildcard
		{"a.b.example.com", f.defCN},   // wildcard covers one label only
		{"example.com", f.defCN},       // nor the bare domain
		{"", f.defCN},                  // no SNI
		{"other.test", f.defCN},        // unknown name
	}
	for _, c := range cases {
		t.Run("sni="+c.sni, func(t *testing.T) {
			cn, res, err := handshakeCN(t, s, &tls.Config{ServerName: c.sni, InsecureSkipVerify: true})
			if err != nil || res.err != nil {
				t.Fatalf("handshake: client %v, server %v", err, res.err)
			}
			if cn != c.want {
				t.Errorf("cert %q, want %q", cn, c.want)
			}
			if res.info.ALPN != "" || res.info.ServerName != strings.ToLower(c.sni) && res.info.ServerName != c.sni {
				t.Errorf("info %+v", res.info)
			}
		})
	}
	// ALPN: http/1.1 is advertised; h2 alone is refused by crypto/tls.
	_, res, err := handshakeCN(t, s, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil || res.info.ALPN != "http/1.1" {
		t.Errorf("ALPN %q, err %v", res.info.ALPN, err)
	}
}

func TestOldVersionsRefused(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		_, res, err := handshakeCN(t, s, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
		if err == nil || res.err == nil {
			t.Fatalf("TLS %x accepted (client err %v, server err %v)", v, err, res.err)
		}
	}
	if st := s.Stats(); st.FailedVersionCipher != 2 || st.HandshakesOK != 0 {
		t.Errorf("stats %+v, want 2 version/cipher failures", st)
	}
	// TLS 1.3 only.
	s13, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshakeCN(t, s13, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("TLS 1.2 accepted by a TLS 1.3-only server")
	}
	if _, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, MinVersion: tls.VersionTLS11}); err == nil {
		t.Error("MinVersion TLS 1.1 accepted")
	}
}

func TestPlaintextRefused(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	c, sv := tcpPair(t)
	ch := serveOnce(t, s, sv)
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res := <-ch
	if res.err == nil {
		t.Fatal("plaintext HTTP accepted as TLS")
	}
	sv.Close()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Errorf("client side: %v", err)
	}
	if st := s.Stats(); st.FailedNotTLS != 1 {
		t.Errorf("stats %+v, want FailedNotTLS 1 (err %v)", st, res.err)
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "reset") }

func TestHandshakeTimeout(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, HandshakeTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, sv := tcpPair(t)
	res := <-serveOnce(t, s, sv) // client never speaks
	if res.err == nil {
		t.Fatal("silent client did not time out")
	}
	if st := s.Stats(); st.FailedTimeout != 1 {
		t.Errorf("stats %+v, want FailedTimeout 1 (%v)", st, res.err)
	}
}

func TestMTLS(t *testing.T) {
	checkLeaks(t)
	f := newSNIFixture(t)
	clientCA, otherCA := newCA(t, "clients"), newCA(t, "other")
	s, err := NewServer(ServerConfig{CertFile: f.def.CertFile, KeyFile: f.def.KeyFile, ClientCAFile: clientCA.file})
	if err != nil {
		t.Fatal(err)
	}
	load := func(ca *testCA, cn string, uri bool) []tls.Certificate {
		names := []string{cn + ".clients.test"}
		cf, kf := ca.leaf(t, cn, names, false, true)
		c, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	t.Run("good", func(t *testing.T) {
		_, res, err := handshakeCN(t, s, &tls.Config{InsecureSkipVerify: true, Certificates: load(clientCA, "alice", false)})
		if err != nil || res.err != nil {
			t.Fatalf("client %v, server %v", err, res.err)
		}
		id := res.info.Peer
		if !id.Verified || id.CommonName != "alice" || len(id.DNSNames) != 1 || id.DNSNames[0] != "alice.clients.test" ||
			!strings.Contains(id.Subject, "CN=alice") {
			t.Errorf("peer identity %+v", id)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, res, _ := handshakeCN(t, s, &tls.Config{InsecureSkipVerify: true})
		if res.err == nil {
			t.Fatal("no client certificate accepted")
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		_, res, _ := handshakeCN(t, s, &tls.Config{InsecureSkipVerify: true, Certificates: load(otherCA, "mallory", false)})
		if res.err == nil {
			t.Fatal("client certificate from an unknown CA accepted")
		}
	})
	if st := s.Stats(); st.FailedClientCert != 2 || st.HandshakesOK != 1 {
		t.Errorf("stats %+v, want 2 client-cert failures and 1 ok", st)
	}
}

func TestReload(t *testing.T) {
	checkLeaks(t)
	ca := newCA(t, "reload")
	cert1, key1 := ca.leaf(t, "first", []string{"r.test"}, false, false)
	cert2, key2 := ca.leaf(t, "second", []string{"r.test"}, true, false)
	dir := t.TempDir()
	certFile, keyFile := dir+"/cert.pem", dir+"/key.pem"
	cp := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp(cert1, certFile)
	cp(key1, keyFile)
	s, err := NewServer(ServerConfig{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{ServerName: "r.test", RootCAs: poolOf(t, ca)}
	// An established connection survives the reload.
	c0, sv0 := tcpPair(t)
	ch := serveOnce(t, s, sv0)
	old, err := stdClient(t, c0, cfg)
	res := <-ch
	if err != nil || res.err != nil {
		t.Fatal(err, res.err)
	}
	defer res.conn.Close()

	cp(cert2, certFile)
	cp(key2, keyFile)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn, _, err := handshakeCN(t, s, cfg); err != nil || cn != "second" {
		t.Errorf("after reload: cert %q, err %v; want second", cn, err)
	}
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), "keeping current") {
		t.Fatalf("bad file: Reload returned %v", err)
	}
	if cn, _, err := handshakeCN(t, s, cfg); err != nil || cn != "second" {
		t.Errorf("after a rejected reload: cert %q, err %v; want second", cn, err)
	}
	// The old connection still carries data both ways.
	go func() { _, _ = res.conn.Write([]byte("ping")); res.conn.Close() }()
	_ = old.SetReadDeadline(time.Now().Add(testTimeout))
	if b, err := io.ReadAll(old); err != nil || string(b) != "ping" {
		t.Errorf("old connection after reload: %q, %v", b, err)
	}
	old.Close()
}

func TestNewServerErrors(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); err == nil || !strings.HasPrefix(err.Error(), "tlsconn: ") {
		t.Errorf("no certs: %v", err)
	}
	_, err := NewServer(ServerConfig{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent-key.pem"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent.pem") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := ParseMode("sometimes"); err == nil {
		t.Error("bad mode accepted")
	}
	if m, err := ParseMode("require"); err != nil || m != ModeRequire {
		t.Error("require not parsed")
	}
	var ae AlertError = 40
	if !errors.As(error(ae), &ae) || !strings.HasPrefix(ae.Error(), "tlsconn: ") {
		t.Error(ae)
	}
}
