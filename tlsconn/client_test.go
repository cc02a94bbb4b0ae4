package tlsconn

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// upstream is a crypto/tls server on one loopback connection.
type upstream struct {
	cfg *tls.Config
	sni chan string
}

func newUpstream(t *testing.T, ca *testCA, names []string) *upstream {
	cf, kf := ca.leaf(t, "upstream", names, false, false)
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{sni: make(chan string, 16)}
	u.cfg = &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		u.sni <- h.ServerName
		return nil, nil
	}}
	return u
}

// dial runs one Client.Handshake against u and returns the result; the
// upstream side is closed when the test ends.
func (u *upstream) dial(t *testing.T, c *Client) hsResult {
	t.Helper()
	cl, sv := tcpPair(t)
	srv := tls.Server(sv, u.cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Handshake() }()
	conn, tcp, info, err := c.Handshake(testCtx(t), cl)
	if err != nil {
		cl.Close() // unblocks the server handshake
	}
	<-done
	if conn != nil {
		t.Cleanup(func() { conn.Close() })
	}
	return hsResult{conn, tcp, info, err}
}

func TestClientVerification(t *testing.T) {
	checkLeaks(t)
	ca, otherCA := newCA(t, "up"), newCA(t, "other")
	u := newUpstream(t, ca, []string{"backend.test", "127.0.0.1"})
	t.Run("default on: untrusted CA", func(t *testing.T) {
		c, err := NewClient(ClientConfig{CAFile: otherCA.file}, "backend.test")
		if err != nil {
			t.Fatal(err)
		}
		if r := u.dial(t, c); r.err == nil {
			t.Fatal("untrusted certificate accepted")
		}
		if st := c.Stats(); st.FailedBadCert != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("wrong hostname", func(t *testing.T) {
		drain(u.sni)
		c, _ := NewClient(ClientConfig{CAFile: ca.file}, "elsewhere.test")
		if r := u.dial(t, c); r.err == nil || !strings.Contains(r.err.Error(), "elsewhere.test") {
			t.Fatalf("wrong name: %v", r.err)
		}
		if got := <-u.sni; got != "elsewhere.test" {
			t.Errorf("SNI %q", got)
		}
	})
	t.Run("good", func(t *testing.T) {
		c, _ := NewClient(ClientConfig{CAFile: ca.file, Mode: ModeOff}, "backend.test")
		r := u.dial(t, c)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !r.info.Peer.Verified || r.info.ALPN != "" || r.info.ServerName != "backend.test" {
			t.Errorf("info %+v", r.info)
		}
		if c.Warning() != "" {
			t.Error("warning on a verified config")
		}
		drain(u.sni)
	})
	t.Run("explicit ServerName", func(t *testing.T) {
		c, _ := NewClient(ClientConfig{CAFile: ca.file, ServerName: "backend.test"}, "127.0.0.2")
		if r := u.dial(t, c); r.err != nil {
			t.Fatal(r.err)
		}
		if got := <-u.sni; got != "backend.test" {
			t.Errorf("SNI %q", got)
		}
	})
	t.Run("InsecureSkipVerify", func(t *testing.T) {
		c, _ := NewClient(ClientConfig{InsecureSkipVerify: true}, "whatever.test")
		if r := u.dial(t, c); r.err != nil || r.info.Peer.Verified {
			t.Fatalf("err %v verified %v", r.err, r.info.Peer.Verified)
		}
		if w := c.Warning(); !strings.Contains(w, "OFF") {
			t.Errorf("warning %q", w)
		}
		drain(u.sni)
	})
	t.Run("IP literal: no SNI, IP SAN verified", func(t *testing.T) {
		c, _ := NewClient(ClientConfig{CAFile: ca.file}, "127.0.0.1")
		if r := u.dial(t, c); r.err != nil {
			t.Fatal(r.err)
		}
		if got := <-u.sni; got != "" {
			t.Errorf("SNI %q sent for an IP literal", got)
		}
		c2, _ := NewClient(ClientConfig{CAFile: ca.file}, "127.0.0.9")
		if r := u.dial(t, c2); r.err == nil {
			t.Error("IP not in the certificate accepted")
		}
		drain(u.sni)
	})
}

func drain(ch chan string) {
	for len(ch) > 0 {
		<-ch
	}
}

// TestClientResumption: the second connection to an upstream resumes.
// Offload is off: an offloaded TLS 1.3 client drops tickets (doc.go).
func TestClientResumption(t *testing.T) {
	checkLeaks(t)
	ca := newCA(t, "resume")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		u := newUpstream(t, ca, []string{"backend.test"})
		u.cfg.MaxVersion = v
		c, _ := NewClient(ClientConfig{CAFile: ca.file, Mode: ModeOff}, "backend.test")
		first := u.dial(t, c)
		if first.err != nil {
			t.Fatal(first.err)
		}
		if v == tls.VersionTLS13 {
			// The ticket arrives after the handshake: read it.
			_ = first.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, _ = first.conn.Read(make([]byte, 1))
		}
		second := u.dial(t, c)
		if second.err != nil || !second.info.DidResume {
			t.Errorf("version %x: second handshake resumed=%v err=%v", v, second.info.DidResume, second.err)
		}
	}
}

var _ net.Conn = (*Conn)(nil)
