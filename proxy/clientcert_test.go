package proxy

import (
	"bufio"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testpki"
)

// testPeer is a verified client certificate's identity, as a TLS server
// with client CAs fills it, with a URI name (a SPIFFE ID) added.
func testPeer(t *testing.T) serval.PeerInfo {
	t.Helper()
	ca := testpki.NewCA(t, "xfcc-ca")
	kp := ca.KeyPair(t, testpki.Leaf{CommonName: "client-1", Names: []string{"svc.example", "alt.example"}, Client: true})
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return serval.PeerInfo{Verified: true, Subject: leaf.Subject.String(), CommonName: leaf.Subject.CommonName,
		DNSNames: leaf.DNSNames, URIs: []string{"spiffe://example.org/ns/a/sa/b"}, Leaf: leaf}
}

// TestClientCertHeader: the configured field carries the verified client
// certificate's XFCC element; a client's own field of that name (or its
// underscore spelling) never reaches the upstream unless trusted, where
// ours is appended to it; a connection without a verified certificate
// adds nothing.
func TestClientCertHeader(t *testing.T) {
	checkLeaks(t)
	peer := testPeer(t)
	sum := sha256.Sum256(peer.Leaf.Raw)
	ours := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="CN=client-1,O=Serval Test"` +
		";URI=spiffe://example.org/ns/a/sa/b;DNS=svc.example;DNS=alt.example"
	for _, tc := range []struct {
		name  string
		trust bool
		peer  *serval.PeerInfo // nil: plain connection
		want  []string
	}{
		{"mtls", false, &peer, []string{ours}},
		{"mtls-trusted", true, &peer, []string{"Hash=spoof, " + ours}},
		{"plain", false, nil, nil},
		{"plain-trusted", true, nil, []string{"Hash=spoof"}},
		{"unverified", false, &serval.PeerInfo{Subject: "CN=x", Leaf: peer.Leaf}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			heads := make(chan *http.Request, 4)
			hs, _ := rawHarness(t, Config{ClientCertHeader: "X-Forwarded-Client-Cert", TrustForwarded: tc.trust}, serval.Hooks{},
				func(c net.Conn, br *bufio.Reader) {
					for {
						req, _, err := readRequest(br)
						if err != nil {
							return
						}
						heads <- req
						io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
					}
				})
			if tc.peer != nil {
				hs.tlsInfo.Store(&serval.TLSInfo{Peer: *tc.peer})
			}
			tc2 := dialHarness(t, hs)
			// Two requests on the connection: the second uses the value
			// computed for the first.
			for i := range 2 {
				tc2.send("GET /" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: Hash=spoof\r\n" +
					"X_Forwarded_Client_Cert: Hash=underscore\r\nx-forwarded-client-cert-2: kept\r\n\r\n")
				if resp, _ := tc2.mustRead("GET"); resp.StatusCode != 204 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				req := <-heads
				if got := req.Header.Values("X-Forwarded-Client-Cert"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Errorf("request %d: X-Forwarded-Client-Cert = %q, want %q", i, got, tc.want)
				}
				if v := req.Header.Get("X_Forwarded_Client_Cert"); v != "" {
					t.Errorf("the underscore spelling reached the upstream: %q", v)
				}
				if req.Header.Get("X-Forwarded-Client-Cert-2") != "kept" {
					t.Errorf("an unrelated field was dropped")
				}
			}
		})
	}
}

func TestClientCertHeaderConfig(t *testing.T) {
	for _, name := range []string{"X-Forwarded-Client-Cert", "X-SSL-Client", "ssl_client"} {
		if _, err := (Config{ClientCertHeader: name}).withDefaults(); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
	for _, name := range []string{"X-Forwarded-For", "connection", "Host", "Content-Length", "Via", "bad name", "a:b",
		strings.Repeat("x", fieldNameBytesMax+1)} {
		if _, err := (Config{ClientCertHeader: name}).withDefaults(); err == nil {
			t.Errorf("%q accepted", name)
		}
	}
}

func TestAppendCertPart(t *testing.T) {
	for _, tc := range []struct {
		v     string
		quote bool
		want  string
	}{
		{"svc.example", false, ";K=svc.example"},
		{"svc.example", true, `;K="svc.example"`},
		{"CN=a,O=b", false, `;K="CN=a,O=b"`},
		{`CN=say "hi"\`, true, `;K="CN=say \"hi\"\\"`},
		{"a;b", false, `;K="a;b"`},
		{"two words", false, `;K="two words"`},
		{"CN=Müller", true, `;K="CN=Müller"`}, // UTF-8 is obs-text to HTTP: passed as is, as Envoy does
		{"CN=a\r\nX-Evil: 1", true, ""},
		{"nul\x00", false, ""},
		{"del\x7f", false, ""},
		{"", true, ""},
	} {
		if got := string(appendCertPart(make([]byte, 0, 64), "K", tc.v, tc.quote)); got != tc.want {
			t.Errorf("appendCertPart(%q, %v) = %q, want %q", tc.v, tc.quote, got, tc.want)
		}
	}
	// A part that does not fit is left out whole.
	b := appendCertPart(make([]byte, 0, 10), "DNS", "long.example", false)
	if len(b) != 0 {
		t.Errorf("a part over the bound gave %q", b)
	}
}

// TestClientCertBounded: a certificate with more names than fit
// ClientCertBytesMax gets the hash, the subject and the names that fit,
// each whole.
func TestClientCertBounded(t *testing.T) {
	peer := testPeer(t)
	for i := range 400 {
		peer.DNSNames = append(peer.DNSNames, "name-"+strconv.Itoa(i)+".example")
	}
	v := appendClientCert(make([]byte, 0, ClientCertBytesMax), &peer)
	if len(v) > ClientCertBytesMax || !strings.HasPrefix(string(v), "Hash=") {
		t.Fatalf("value of %d bytes: %.80q", len(v), v)
	}
	parts := strings.Split(string(v), ";")
	last := parts[len(parts)-1]
	if !strings.HasPrefix(last, "DNS=name-") || !strings.HasSuffix(last, ".example") {
		t.Errorf("last part %q is not a whole name", last)
	}
	if len(parts) < 100 || len(parts) > 400 {
		t.Errorf("%d parts", len(parts))
	}
}
