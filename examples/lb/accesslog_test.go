package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testnet"
)

// waitLines waits until path holds at least n lines and returns them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes, want %d lines: %q", path, len(b), n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAccessLog: --access-log FILE gets a line per request (the proxied
// ones with their backend, a failed one with its phase and error) within
// about a second; SIGHUP after the file was moved away (log rotation)
// starts a new file, and the old one keeps what it had.
func TestAccessLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	hup := make(chan os.Signal, 1)
	addr, logs := startLBWith(t, hup, "--access-log", path)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	first, second := "GET /first?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", "POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
	roundTrip(t, c, br, first)
	roundTrip(t, c, br, second)

	line := regexp.MustCompile(`^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z id=\d+ client=127\.0\.0\.1:\d+ method=(GET|POST) ` +
		`host="t" path="([^"]*)" status=200 bytes_in=(\d+) bytes_out=\d+ upstream=127\.0\.0\.1:\d+ reused=(true|false) attempts=1 ` +
		`queue_us=\d+ connect_us=\d+ ttfb_us=\d+ total_us=\d+$`)
	lines := waitLines(t, path, 2)
	// bytes_in counts what the client sent: head and body.
	for i, want := range []struct{ path, in string }{{"/first?x=1", strconv.Itoa(len(first))}, {"/second", strconv.Itoa(len(second))}} {
		m := line.FindStringSubmatch(lines[i])
		if m == nil || m[2] != want.path || m[3] != want.in {
			t.Fatalf("line %d: %q, want path %q bytes_in %s", i, lines[i], want.path, want.in)
		}
	}

	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "access log reopened") {
		if time.Now().After(deadline) {
			t.Fatalf("no reopen logged: %s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	roundTrip(t, c, br, "GET /third HTTP/1.1\r\nHost: t\r\n\r\n")
	if lines := waitLines(t, path, 1); len(lines) != 1 || !strings.Contains(lines[0], `path="/third"`) {
		t.Fatalf("new file: %q", lines)
	}
	if lines := waitLines(t, rotated, 2); len(lines) != 2 {
		t.Fatalf("rotated file: %q", lines)
	}
}

// TestAccessLogFailure: a request that fails (no backend answers) is
// logged with its status, phase and error; with - the lines go to stdout.
func TestAccessLogFailure(t *testing.T) {
	dead := testnet.RefusingAddr(t)
	addr, logs := startLB(t, "--access-log", "-", "--no-health", "--retries", "0",
		"--backends", dead)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	want := regexp.MustCompile(`method=GET host="t" path="/down" status=502 .* upstream=127\.0\.0\.1:\d+ .* phase=connect err="[^"]+"`)
	deadline := time.Now().Add(10 * time.Second)
	for !want.MatchString(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no access line for the failure in:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAccessLogNoAttempt: a request the balancer answers itself after
// selecting a backend, without sending it there (a chunked body over
// --max-body-size, 413; OPTIONS with Max-Forwards: 0, 200), is logged
// with upstream=- and attempts=0: no backend gave the answer. A line is
// written when its request is finished, after its response was sent,
// so the second connection's line may come first (seen under -race on a
// loaded machine): each is looked for among both.
func TestAccessLogNoAttempt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	addr, _ := startLB(t, "--access-log", path, "--max-body-size", "1k")
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("a", 0x800) + "\r\n0\r\n\r\n", 413},
		{"OPTIONS * HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n", 200},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := roundTrip(t, c, bufio.NewReader(c), tc.raw)
		c.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
		}
	}
	lines := waitLines(t, path, 2)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), lines)
	}
	for _, want := range []string{`method=POST host="t" path="/big" status=413 `, `method=OPTIONS host="t" path="*" status=200 `} {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, want) })
		if i < 0 {
			t.Errorf("no line with %q in %q", want, lines)
		} else if !strings.Contains(lines[i], " upstream=- reused=false attempts=0 ") {
			t.Errorf("line %d: %q, want %q with upstream=- attempts=0", i, lines[i], want)
		}
	}
}
