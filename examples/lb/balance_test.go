//go:build linux

package main

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// balancedWorkers makes the load table for n workers and n balanced
// listeners on one listening socket, as n workers would have them.
func balancedWorkers(t *testing.T, n int) (*loadTable, []net.Listener, []serval.Metrics, string) {
	t.Helper()
	lf, bound, err := listenShared("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	table, tf, err := newLoadTable(n)
	if err != nil {
		t.Fatal(err)
	}
	tf.Close()
	t.Cleanup(table.close)
	lns := make([]net.Listener, n)
	ms := make([]serval.Metrics, n)
	for k := range n {
		ln, err := net.FileListener(lf)
		if err != nil {
			t.Fatal(err)
		}
		if lns[k], ms[k], err = balanceWorker(ln, nil, table, k); err != nil {
			t.Fatal(err)
		}
	}
	return table, lns, ms, bound
}

// TestBalancedAccept: two workers accepting from one socket split a
// burst of connections evenly (within one), whatever their addresses;
// closing connections counts them out, and a worker that stops
// accepting leaves the whole share to the other.
func TestBalancedAccept(t *testing.T) {
	defer func(g time.Duration) { acceptGrace = g }(acceptGrace)
	acceptGrace = time.Second // the scheduler may be slow here; nobody is stuck
	table, lns, ms, addr := balancedWorkers(t, 2)
	var mu sync.Mutex
	got := map[int][]net.Conn{}
	var wg sync.WaitGroup
	for k, ln := range lns {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				got[k] = append(got[k], c)
				mu.Unlock()
			}
		})
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
		for _, cs := range got {
			for _, c := range cs {
				c.Close()
			}
		}
	}()
	const burst = 40
	clients := make([]net.Conn, 0, 2*burst)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	dial := func(n int) {
		for range n {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
	}
	accepted := func(want int) (int, int) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			a, b := len(got[0]), len(got[1])
			mu.Unlock()
			if a+b == want || time.Now().After(deadline) {
				return a, b
			}
			time.Sleep(time.Millisecond)
		}
	}
	dial(burst) // all queued at once: the kernel's backlog holds them
	if a, b := accepted(burst); a+b != burst || a-b > 1 || b-a > 1 {
		t.Fatalf("%d connections split %d/%d, want %d each", burst, a, b, burst/2)
	}
	if c0, c1 := table.conns(0).Load(), table.conns(1).Load(); c0 != burst/2 || c1 != burst/2 {
		t.Fatalf("table counts %d/%d", c0, c1)
	}
	// Worker 1's connections close (the server reports each): the next
	// ones go to worker 1 until it has as many as worker 0 again (but
	// one: worker 0 may already wait in accept(2) from the tie).
	for range burst / 2 {
		ms[1].ConnectionClosed(serval.CloseNormal)
	}
	mu.Lock()
	before0 := len(got[0])
	mu.Unlock()
	dial(burst / 2)
	if a, _ := accepted(burst + burst/2); a-before0 > 1 {
		t.Fatalf("worker 0 took %d of %d connections while worker 1 had none", a-before0, burst/2)
	}
	// Worker 1 stops accepting: worker 0 takes the rest without waiting.
	lns[1].Close()
	start := time.Now()
	dial(4)
	if a, b := accepted(burst + burst/2 + 4); a+b != burst+burst/2+4 {
		t.Fatalf("after worker 1 closed its listener: %d/%d accepted", a, b)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("4 connections took %v to be accepted", d)
	}
}

// TestBalancedAcceptStuckWorker: a worker that says it accepts but does
// not (busy, stuck) delays the others' accepts by acceptGrace each, and
// loses no connection.
func TestBalancedAcceptStuckWorker(t *testing.T) {
	defer func(g time.Duration) { acceptGrace = g }(acceptGrace)
	acceptGrace = 20 * time.Millisecond
	_, lns, _, addr := balancedWorkers(t, 2)
	defer lns[1].Close() // never accepts
	const n = 5
	done := make(chan int, 1)
	go func() {
		var cs []net.Conn
		defer func() {
			for _, c := range cs {
				c.Close()
			}
			done <- len(cs)
		}()
		for range n {
			c, err := lns[0].Accept()
			if err != nil {
				return
			}
			cs = append(cs, c)
		}
	}()
	start := time.Now()
	var clients []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	select {
	case got := <-done:
		if got != n {
			t.Fatalf("worker 0 accepted %d of %d", got, n)
		}
	case <-time.After(10 * time.Second):
		lns[0].Close()
		t.Fatalf("worker 0 accepted %d of %d within 10s", <-done, n)
	}
	lns[0].Close()
	// The first was worker 0's by the tie; each of the others waited the
	// grace for worker 1.
	if d := time.Since(start); d < (n-1)*acceptGrace*3/4 {
		t.Errorf("%d connections accepted in %v: worker 0 did not leave them to worker 1 first", n, d)
	}
}
