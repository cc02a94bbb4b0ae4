package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
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
