package tlsconn

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testpki"
)

// benchPair returns both ends of a loopback connection: a RecordConn pair
// on random keys (the data path is the same as after a handshake) or a
// crypto/tls pair after a real handshake.
func benchPair(b *testing.B, records bool, version uint16) (srv, cli net.Conn) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); s.Close() })
	if records {
		sec := make([]byte, 32)
		var ks, kc trafficKeys
		if version == tls.VersionTLS13 {
			ks, _ = keysTLS13(suiteAES128, sec, 0)
			kc, _ = keysTLS13(suiteAES128, append(sec[:0:0], 1), 0)
		} else {
			ks, kc = keysTLS12(suiteAES128, make([]byte, 48), sec, sec)
		}
		rs, err1 := newRecordConn(s, true, &ks, &kc, sec, sec)
		rcl, err2 := newRecordConn(c, false, &kc, &ks, sec, sec)
		if err1 != nil || err2 != nil {
			b.Fatal(err1, err2)
		}
		return rs, rcl
	}
	ca := testpki.NewCA(b, "bench")
	cert := ca.KeyPair(b, testpki.Leaf{CommonName: "b.test", Names: []string{"b.test"}})
	suites := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	ts := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}, CipherSuites: suites})
	tc := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "b.test", MaxVersion: version, CipherSuites: suites})
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	return ts, tc
}

var benchLayers = []struct {
	name    string
	records bool
	version uint16
}{
	{"records/tls13", true, tls.VersionTLS13},
	{"crypto-tls/tls13", false, tls.VersionTLS13},
	{"records/tls12", true, tls.VersionTLS12},
	{"crypto-tls/tls12", false, tls.VersionTLS12},
}

// BenchmarkRecordThroughput: one-way 16 KiB writes (one full record each)
// read on the other end, AES-128-GCM: RecordConn versus crypto/tls.
func BenchmarkRecordThroughput(b *testing.B) {
	for _, l := range benchLayers {
		b.Run(l.name, func(b *testing.B) {
			srv, cli := benchPair(b, l.records, l.version)
			_ = srv.SetDeadline(time.Now().Add(time.Minute))
			msg := make([]byte, maxPlaintext)
			done := make(chan error, 1)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				buf := make([]byte, 32<<10)
				var err error
				for n := int64(0); n < int64(b.N)*int64(len(msg)) && err == nil; {
					var m int
					m, err = srv.Read(buf)
					n += int64(m)
				}
				done <- err
			}()
			for range b.N {
				if _, err := cli.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRecordRoundTrip: a 1 KiB request answered by a 1 KiB response
// on an established connection (the keep-alive shape), ns per round trip.
func BenchmarkRecordRoundTrip(b *testing.B) {
	for _, l := range benchLayers {
		b.Run(l.name, func(b *testing.B) {
			srv, cli := benchPair(b, l.records, l.version)
			_ = srv.SetDeadline(time.Now().Add(time.Minute))
			_ = cli.SetDeadline(time.Now().Add(time.Minute))
			msg := make([]byte, 1024)
			go func() { // echo until the client closes
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(srv, buf); err != nil {
						return
					}
					if _, err := srv.Write(buf); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cli.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(cli, buf); err != nil {
					b.Fatal(err)
				}
			}
			cli.Close()
		})
	}
}
