package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalEndsAtOnce: a second SIGINT ends the process at once,
// also when it was started with SIGINT ignored, as a shell script's
// background job is ("lb &" in a script, then kill -INT twice). The
// first starts the drain of a request its backend never answers; the
// second must not wait for --shutdown-timeout. Before, the second
// restored the disposition the process started with (ignored) and the
// drain ran to its end.
func TestSecondSignalEndsAtOnce(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to start the balancer with SIGINT ignored:", err)
	}
	// A backend that takes requests and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
			go io.Copy(io.Discard, c)
		}
	}()
	defer func() {
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	}()
	for _, ignored := range []bool{true, false} {
		trap := ""
		if ignored {
			trap = `trap "" INT; `
		}
		cmd := exec.Command(sh, "-c", trap+`exec "$0" "$@"`, os.Args[0], "--host", "127.0.0.1", "--port", "0",
			"--backends", ln.Addr().String(), "--no-health", "--max-conns", "16", "--shutdown-timeout", "30s")
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		logs := new(syncBuffer)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		addrc := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				logs.Write([]byte(sc.Text() + "\n"))
				if m := listeningAddr.FindStringSubmatch(sc.Text()); m != nil {
					addrc <- m[1]
				}
			}
			exited <- cmd.Wait()
		}()
		var addr string
		select {
		case addr = <-addrc:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("ignored=%v: no listening address logged:\n%s", ignored, logs)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
		select {
		case <-held: // the request is at the backend
		case <-time.After(10 * time.Second):
			t.Fatalf("ignored=%v: the request never reached the backend", ignored)
		}
		cmd.Process.Signal(os.Interrupt)
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "stopping:"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("ignored=%v: no drain after the first SIGINT:\n%s", ignored, logs)
			}
		}
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			// Ended by SIGINT (its default action) or exit status 130.
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Errorf("ignored=%v: exit %v, want an end by SIGINT", ignored, err)
			} else if ws := ee.Sys().(syscall.WaitStatus); !(ws.Signaled() && ws.Signal() == syscall.SIGINT) && ws.ExitStatus() != 130 {
				t.Errorf("ignored=%v: exit %v, want an end by SIGINT", ignored, err)
			}
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("ignored=%v: still running 3s after the second SIGINT (the drain has 30s):\n%s", ignored, logs)
		}
		c.Close()
	}
}
