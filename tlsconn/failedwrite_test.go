package tlsconn

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestFailedWriteEndsCleanly: after a Write that failed (here a deadline
// in the past, as the proxy uses to stop a body pump), CloseWrite and
// Close must not send a record the peer cannot authenticate. crypto/tls
// consumes the sequence number of a record whose write failed and still
// sends close_notify afterwards: its peer then reads "bad record MAC"
// instead of the end of the stream (CryptoConn guards against it). Every
// user-space path a handshake can return is checked: origination on
// crypto/tls (ModeOff, and ModeAuto where the kernel has no tls module,
// through the capturing handshakeConn), termination on RecordConn, and
// termination on crypto/tls (CryptoTLSRecords).
func TestFailedWriteEndsCleanly(t *testing.T) {
	runFailedWrite(t, "client-crypto-tls", "client-crypto-tls-auto", "server-records", "server-crypto-tls")
}

// TestKTLSFailedWriteEndsCleanly is the same for offloaded connections,
// both roles: the kernel seals the records.
func TestKTLSFailedWriteEndsCleanly(t *testing.T) {
	skipWithoutKTLS(t)
	runFailedWrite(t, "client-kernel", "server-kernel")
}

func runFailedWrite(t *testing.T, paths ...string) {
	checkLeaks(t)
	f := newRecordFixture(t)
	// "stopped": no Write failed, but the deadline is already past when
	// CloseWrite comes (the close_notify may not go; the FIN must).
	for _, end := range []string{"CloseWrite", "Close", "stopped-CloseWrite"} {
		for _, path := range paths {
			t.Run(path+"/"+end, func(t *testing.T) {
				conn, peer := failedWritePair(t, f, path)
				if err := conn.SetWriteDeadline(time.Unix(1, 0)); err != nil {
					t.Fatal(err)
				}
				if end != "stopped-CloseWrite" {
					if _, err := conn.Write([]byte("lost")); err == nil {
						t.Fatal("a write past its deadline succeeded")
					}
				}
				if end == "Close" {
					_ = conn.Close()
				} else {
					_ = conn.(interface{ CloseWrite() error }).CloseWrite()
				}
				_ = peer.SetReadDeadline(time.Now().Add(testTimeout))
				n, err := peer.Read(make([]byte, 16))
				if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)) {
					t.Fatalf("the peer read %d bytes, %v; want the stream to end (EOF or reset)", n, err)
				}
			})
		}
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// failedWritePair returns the connection under test (path names its
// role and record layer) and its crypto/tls peer, both closed when the
// test ends.
func failedWritePair(t *testing.T, f *recordFixture, path string) (net.Conn, *tls.Conn) {
	t.Helper()
	var want Path
	var r hsResult
	var peer *tls.Conn
	switch path {
	case "client-crypto-tls", "client-crypto-tls-auto", "client-kernel":
		mode := ModeOff
		want = PathCryptoTLS
		switch path {
		case "client-crypto-tls-auto":
			mode = ModeAuto
		case "client-kernel":
			mode, want = ModeRequire, PathKernel
		}
		c, err := NewClient(ClientConfig{CAFile: f.ca.File, ServerName: "r.test", Mode: mode}, "r.test")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(f.cf, f.kf)
		if err != nil {
			t.Fatal(err)
		}
		cl, sv := tcpPair(t)
		peer = tls.Server(sv, &tls.Config{Certificates: []tls.Certificate{cert}})
		done := make(chan error, 1)
		go func() { done <- peer.Handshake() }()
		r.conn, r.tcp, r.info, r.err = c.Handshake(testCtx(t), cl)
		if herr := <-done; r.err != nil || herr != nil {
			t.Fatalf("handshake: %v, peer %v", r.err, herr)
		}
	case "server-records", "server-crypto-tls", "server-kernel":
		var s *Server
		switch path {
		case "server-records":
			s, want = f.server(t, false), PathRecords
		case "server-crypto-tls":
			s, want = f.server(t, true), PathCryptoTLS
		default:
			var err error
			if s, err = NewServer(ServerConfig{CertFile: f.cf, KeyFile: f.kf, Mode: ModeRequire}); err != nil {
				t.Fatal(err)
			}
			want = PathKernel
		}
		r, peer, _ = serveStd(t, s, f.clientConfig(t, tls.VersionTLS13, nil))
	default:
		t.Fatalf("unknown path %q", path)
	}
	t.Cleanup(func() { r.conn.Close(); peer.Close() })
	if path == "client-crypto-tls-auto" && r.info.Path == PathKernel {
		t.Skip("offloaded: this kernel has the tls module (TestKTLSFailedWriteEndsCleanly covers it)")
	}
	if r.info.Path != want {
		t.Fatalf("path %s, want %s", r.info.Path, want)
	}
	return r.conn, peer
}
