// Command chaos is an integrity and fault load for a proxy in front of
// echo backends (examples/echo-backend --echo-body): concurrent clients
// send POST bodies of random sizes, with Content-Length or chunked, some
// as a pipelined pair, some read back slowly, and check that each response
// body is exactly what they sent; a share of the clients go away at
// random points (mid-upload, mid-download). At the end one more request
// must still be served. It exits 1 on any mismatch or
// error of a client that did not go away on purpose.
//
// bench/chaos.sh starts the backends and the balancer and runs it.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:19620", "proxy address")
	clients := flag.Int("clients", 24, "concurrent clients")
	requests := flag.Int("requests", 120, "requests per client, one connection each")
	bodyMax := flag.Int("body-max", 400_000, "largest request body in bytes")
	abortEvery := flag.Int("abort-every", 3, "every n-th client goes away at random points (0: none)")
	useTLS := flag.Bool("tls", false, "HTTPS (the certificate is not verified)")
	flag.Parse()

	var good, bad, aborted atomic.Int64
	var wg sync.WaitGroup
	for w := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range *requests {
				mode := modeGood + mrand.IntN(3) // plain, pipelined pair or slow reader
				if *abortEvery > 0 && w%*abortEvery == 0 && mrand.IntN(2) == 0 {
					mode = mrand.IntN(2) // goes away mid-upload or mid-download
				}
				var err error
				if mode == modePipelined {
					err = pipelined(*addr, *useTLS, 1+mrand.IntN(*bodyMax/4), 1+mrand.IntN(*bodyMax/4))
				} else {
					err = exchange(*addr, *useTLS, 1+mrand.IntN(*bodyMax), i%2 == 1, mode)
				}
				switch {
				case err != nil:
					bad.Add(1)
					fmt.Fprintf(os.Stderr, "client %d request %d (mode %d): %v\n", w, i, mode, err)
				case mode >= modeGood:
					good.Add(1)
				default:
					aborted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if err := exchange(*addr, *useTLS, 4, false, modeGood); err != nil {
		bad.Add(1)
		fmt.Fprintf(os.Stderr, "after the load: %v\n", err)
	}
	fmt.Printf("echoed intact: %d, went away on purpose: %d, failed: %d\n", good.Load(), aborted.Load(), bad.Load())
	if bad.Load() > 0 {
		os.Exit(1)
	}
}

const (
	modeAbortUpload   = 0 // send half the body, close with the echo unread (a reset)
	modeAbortDownload = 1 // send the body, read a third of the echo, close
	modeGood          = 2
	modePipelined     = 3 // two requests in one write, both echoes checked
	modeSlowReader    = 4 // the echo is read in small pieces with pauses
)

// dial connects to the balancer, over TLS when useTLS (the test
// certificate is not verified), with a 30 s deadline on the whole exchange.
func dial(addr string, useTLS bool) (net.Conn, error) {
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, nil
}

// exchange sends one POST of n random bytes on a new connection and, for
// a good client, checks the echo.
func exchange(addr string, useTLS bool, n int, chunked bool, mode int) error {
	c, err := dial(addr, useTLS)
	if err != nil {
		return err
	}
	defer c.Close()
	body := make([]byte, n)
	rand.Read(body)
	send := body
	if mode == modeAbortUpload {
		send = body[:n/2]
	}
	werr := make(chan error, 1)
	go func() {
		var err error
		if chunked {
			_, err = fmt.Fprintf(c, "POST /chaos HTTP/1.1\r\nHost: chaos\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", len(send))
		} else {
			_, err = fmt.Fprintf(c, "POST /chaos HTTP/1.1\r\nHost: chaos\r\nContent-Length: %d\r\n\r\n", n)
		}
		if err == nil {
			_, err = c.Write(send)
		}
		if err == nil && chunked && mode != modeAbortUpload {
			_, err = io.WriteString(c, "\r\n0\r\n\r\n")
		}
		werr <- err
	}()
	if mode == modeAbortUpload {
		<-werr
		time.Sleep(time.Duration(mrand.IntN(20)) * time.Millisecond)
		return nil // Close (deferred) with the echo unread
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("response: %w", err)
	}
	defer resp.Body.Close()
	if mode == modeAbortDownload {
		io.CopyN(io.Discard, resp.Body, int64(n/3))
		return nil
	}
	var got []byte
	if mode == modeSlowReader {
		got, err = readSlowly(resp.Body)
	} else {
		got, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(got, body) {
		return fmt.Errorf("status %d, %d bytes back for %d sent (chunked=%v), intact=%v",
			resp.StatusCode, len(got), n, chunked, bytes.Equal(got, body))
	}
	return nil
}

// readSlowly reads r in pieces of up to 8 KiB with short pauses, so the
// proxy's writes to this client stall and resume.
func readSlowly(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 8<<10)
	for i := 0; ; i++ {
		n, err := r.Read(buf[:1+mrand.IntN(len(buf))])
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if i%8 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// pipelined sends two POSTs (n1 and n2 random bytes, Content-Length) in
// one write and checks that both echoes come back, in order, intact.
func pipelined(addr string, useTLS bool, n1, n2 int) error {
	c, err := dial(addr, useTLS)
	if err != nil {
		return err
	}
	defer c.Close()
	b1, b2 := make([]byte, n1), make([]byte, n2)
	rand.Read(b1)
	rand.Read(b2)
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST /one HTTP/1.1\r\nHost: chaos\r\nContent-Length: %d\r\n\r\n", n1)
	req.Write(b1)
	fmt.Fprintf(&req, "POST /two HTTP/1.1\r\nHost: chaos\r\nContent-Length: %d\r\n\r\n", n2)
	req.Write(b2)
	werr := make(chan error, 1)
	go func() { _, err := c.Write(req.Bytes()); werr <- err }()
	br := bufio.NewReader(c)
	for i, want := range [][]byte{b1, b2} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("pipelined response %d: %w", i+1, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
			return fmt.Errorf("pipelined response %d: status %d, %d bytes back for %d, %v", i+1, resp.StatusCode, len(got), len(want), err)
		}
	}
	return <-werr
}
