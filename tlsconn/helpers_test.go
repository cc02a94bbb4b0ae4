package tlsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/leakcheck"
	"github.com/servalproxy/serval/internal/testpki"
)

// testTimeout bounds every network step of a test.
const testTimeout = 20 * time.Second

// testCA is a throwaway certificate authority, generated per test
// (internal/testpki does the work).
type testCA struct {
	*testpki.CA
	file string // PEM of the CA certificate
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca := testpki.NewCA(t, name)
	return &testCA{CA: ca, file: ca.File}
}

// leaf issues a certificate for names (DNS names or IP literals) and
// returns the cert and key file paths.
func (ca *testCA) leaf(t *testing.T, cn string, names []string, rsaKey, client bool) (certFile, keyFile string) {
	t.Helper()
	return ca.Issue(t, testpki.Leaf{CommonName: cn, Names: names, RSA: rsaKey, Client: client})
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_ = ln.SetDeadline(time.Now().Add(testTimeout))
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// checkLeaks fails the test if goroutines started during it outlive it.
func checkLeaks(t *testing.T) { leakcheck.Check(t) }

type hsResult struct {
	conn net.Conn
	tcp  *net.TCPConn
	info ConnInfo
	err  error
}

// serveOnce runs s.Handshake on raw in a goroutine.
func serveOnce(t *testing.T, s *Server, raw *net.TCPConn) <-chan hsResult {
	ch := make(chan hsResult, 1)
	ctx := testCtx(t)
	go func() {
		c, tcp, info, err := s.Handshake(ctx, raw)
		ch <- hsResult{c, tcp, info, err}
	}()
	return ch
}

// stdClient runs a crypto/tls client handshake on raw.
func stdClient(t *testing.T, raw net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	err := c.Handshake()
	_ = c.SetDeadline(time.Time{})
	return c, err
}

func poolOf(t *testing.T, ca *testCA) *x509.CertPool { return ca.Pool() }
