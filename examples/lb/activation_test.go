//go:build linux

package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/testnet"
)

// activatedLB starts this test binary as the balancer with f passed as
// systemd does: descriptor 3, LISTEN_FDS=1 and LISTEN_PID the process's
// own pid (set by the shell it execs from, the only way to know the pid
// before the program runs). It returns the process and its log.
func activatedLB(t *testing.T, f *os.File, args ...string) (*exec.Cmd, *syncBuffer, chan error) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to set LISTEN_PID with:", err)
	}
	cmd := exec.Command(sh, append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "--max-conns", "64"}, args...)...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	cmd.ExtraFiles = []*os.File{f}
	logs := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case err := <-exited:
			exited <- err
		case <-time.After(10 * time.Second):
			t.Error("balancer process not gone 10s after SIGKILL")
		}
	})
	return cmd, logs, exited
}

// stopLB sends SIGTERM and waits (bounded) for a clean exit.
func stopLB(t *testing.T, cmd *exec.Cmd, logs *syncBuffer, exited chan error) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup's wait
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; logs:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit within 15s of SIGTERM; logs:\n%s", logs)
	}
}

// TestSocketActivationRestart: with the listening socket passed by the
// service manager (held open by it, here by the test), the balancer
// serves on it, single-process and with --workers, and a restart loses
// no connection: connections made while no balancer runs wait in the
// socket's queue and are answered by the next one.
func TestSocketActivationRestart(t *testing.T) {
	f, a := testnet.ListenerFile(t) // the service manager's copy: the socket outlives each balancer
	addr := a.String()

	cmd, logs, exited := activatedLB(t, f)
	waitLogs(t, logs, "the first balancer listening on the passed socket", func(s string) bool {
		return strings.Contains(s, `msg="load balancer listening" addr=`+addr+` socket=activated`)
	})

	// Requests on new connections, one after the other, all through the
	// restart: every one must be answered.
	var served, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := getActivated(addr); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				served.Add(1)
			}
		}
	})
	time.Sleep(200 * time.Millisecond)
	stopLB(t, cmd, logs, exited)
	atStop := served.Load()
	// No balancer runs for a while: connections made now wait.
	time.Sleep(300 * time.Millisecond)
	cmd2, logs2, exited2 := activatedLB(t, f, "--workers", "2")
	waitLogs(t, logs2, "the second balancer (two workers) listening on the passed socket", func(s string) bool {
		return strings.Contains(s, `msg="load balancer listening" addr=`+addr+` socket=activated`) &&
			strings.Count(s, `msg="worker serving"`) == 2
	})
	deadline := time.Now().Add(10 * time.Second)
	for served.Load() < atStop+20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	stopLB(t, cmd2, logs2, exited2)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed across the restart (first: %v); %d served", failed.Load(), firstErr.Load(), served.Load())
	}
	if served.Load() < atStop+20 {
		t.Errorf("the second balancer served %d requests, want 20", served.Load()-atStop)
	}
}

// getActivated makes one request on a new connection; the answer must
// come from an echo backend.
func getActivated(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Path: /a") {
		return &statusError{resp.StatusCode}
	}
	return nil
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "status " + strconv.Itoa(e.code) }

// TestUseActivated: one passed socket is taken; more than one, or one on
// another address than --host/--port given, is refused with a message
// that says so.
func TestUseActivated(t *testing.T) {
	file := func() (*os.File, *net.TCPAddr) { return testnet.ListenerFile(t) }
	var o options
	if err := useActivated(&o, nil); err != nil || o.activated != nil {
		t.Fatalf("none passed: %v, %v", err, o.activated)
	}
	f1, a1 := file()
	f2, _ := file()
	if err := useActivated(&o, []*os.File{f1, f2}); err == nil || !strings.Contains(err.Error(), "passed 2 listening sockets") {
		t.Errorf("two passed: %v", err)
	}
	for _, c := range []struct {
		host    string
		port    int
		hostSet bool
		portSet bool
		want    string // "" for taken
	}{
		{"", 8080, false, false, ""},
		{"127.0.0.1", a1.Port, true, true, ""},
		{"127.0.0.1", 0, true, true, ""},
		{"", a1.Port + 1, false, true, "not on --port"},
		{"127.0.0.2", 8080, true, false, "not on --host"},
		{"localhost", 8080, true, false, ""}, // a name is not checked
	} {
		f, a := file()
		if c.port == a1.Port {
			c.port = a.Port
		} else if c.port == a1.Port+1 {
			c.port = a.Port + 1
		}
		o := options{host: c.host, port: c.port, hostSet: c.hostSet, portSet: c.portSet}
		err := useActivated(&o, []*os.File{f})
		switch {
		case c.want == "" && (err != nil || o.activated == nil):
			t.Errorf("%+v: %v, want the socket taken", c, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want %q", c, err, c.want)
		}
		if o.activated != nil {
			o.activated.Close()
		}
	}
}

// TestActivationForAnotherProcess: sockets passed to another process (go
// run's, which starts the program as its child) are not taken, and the
// balancer says why, since the listen that follows is likely to find the
// port taken.
func TestActivationForAnotherProcess(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	var out syncBuffer
	logger := slog.New(slog.NewTextHandler(&out, nil))
	var o options
	if err := takeActivated(&o, logger); err != nil || o.activated != nil {
		t.Fatalf("takeActivated: %v, %v; want nothing taken", err, o.activated)
	}
	if !strings.Contains(out.String(), "the sockets were passed to another process") {
		t.Errorf("no warning; log: %q", out.String())
	}
}
