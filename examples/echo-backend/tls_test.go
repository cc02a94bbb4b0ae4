package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testpki"
)

// TestHTTPS: with --cert/--key the backend serves HTTPS with that
// certificate (verified against its CA), keep-alive included, and a
// plain HTTP request to the port is refused.
func TestHTTPS(t *testing.T) {
	ca := testpki.NewCA(t, "echo-test-ca")
	cert, key := ca.Issue(t, testpki.Leaf{CommonName: "echo", Names: []string{"127.0.0.1", "localhost"}})
	base := strings.Replace(start(t, "--id", "tls-1", "--cert", cert, "--key", key), "http://", "https://", 1)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 2 {
		resp, err := c.Get(base + "/secure")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil || resp.Header.Get("X-Backend-Id") != "tls-1" {
			t.Fatalf("request %d: status %d, TLS %v, headers %v", i, resp.StatusCode, resp.TLS != nil, resp.Header)
		}
		if !strings.Contains(string(body), "\nPath: /secure\n") {
			t.Errorf("request %d: dump lacks the path:\n%s", i, body)
		}
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	resp, err := plain.Get(strings.Replace(base, "https://", "http://", 1) + "/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("plain HTTP to the HTTPS port: status %d, want 400", resp.StatusCode)
		}
	}
}

// TestCertWithoutKey: --cert alone is a usage error.
func TestCertWithoutKey(t *testing.T) {
	var out strings.Builder
	if code := run(context.Background(), []string{"--port", "0", "--cert", "x.pem"}, &out, nil); code != 2 {
		t.Errorf("--cert without --key: exit %d, want 2", code)
	}
}
