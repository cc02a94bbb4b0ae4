package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testnet"
)

// TestStdoutReaderGone: when whatever reads the balancer's stdout goes
// away, the log lines that follow fail quietly: the process keeps
// serving (here 502s from a refusing backend, each logged) and drains
// on SIGTERM with exit code 0, instead of dying of SIGPIPE.
func TestStdoutReaderGone(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--host", "127.0.0.1", "--port", "0", "--backends", testnet.RefusingAddr(t),
		"--no-health", "--retries", "0")
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	addr := ""
	sc := bufio.NewScanner(out)
	for addr == "" && sc.Scan() {
		if m := listeningAddr.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatal("no listening address logged")
	}
	out.Close() // the reader goes away
	for i := range 5 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("request %d: %v (the balancer died?)", i, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		c.Close()
		if resp.StatusCode != 502 {
			t.Fatalf("request %d: status %d, want 502", i, resp.StatusCode)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the deferred wait
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s of SIGTERM")
	}
}

// stallable passes writes to logs until stalled, then blocks them until
// released.
type stallable struct {
	logs    *syncBuffer
	stalled atomic.Bool
	release chan struct{}
}

func (s *stallable) Write(p []byte) (int, error) {
	if s.stalled.Load() {
		<-s.release
	}
	return s.logs.Write(p)
}

// TestStalledStdout: with stdout stalled (its reader paused), requests
// whose failure is logged are still answered at once: logging never
// makes a request wait for the output.
func TestStalledStdout(t *testing.T) {
	out := &stallable{logs: new(syncBuffer), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "16",
			"--backends", testnet.RefusingAddr(t), "--no-health", "--retries", "0"}, out, nil)
	}()
	defer func() {
		cancel()
		close(out.release)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not return")
		}
	}()
	addr := ""
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" {
		if m := listeningAddr.FindStringSubmatch(out.logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("not listening; logs:\n%s", out.logs)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	out.stalled.Store(true)
	for i := range 30 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		c.Close()
		if resp.StatusCode != 502 {
			t.Fatalf("request %d: status %d, want 502", i, resp.StatusCode)
		}
	}
}

// TestDrainNotedBeforeStopped: the drain's log line is never lost and
// always comes before "load balancer stopped", even with nothing in
// flight (the drain then takes no time).
func TestDrainNotedBeforeStopped(t *testing.T) {
	backends := echoBackends(t, "b")
	for i := range 10 {
		logs := new(syncBuffer)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- runWith(ctx, []string{"--host", "127.0.0.1", "--port", "0", "--max-conns", "8", "--backends", backends, "--no-health"}, logs, nil)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for !listeningAddr.MatchString(logs.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("not listening; logs:\n%s", logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("run did not return")
		}
		s := logs.String()
		a, b := strings.Index(s, "stopping: no new connections"), strings.Index(s, "load balancer stopped")
		if a < 0 || b < 0 || a > b {
			t.Fatalf("run %d: the drain line at %d, stopped at %d:\n%s", i, a, b, s)
		}
	}
}
