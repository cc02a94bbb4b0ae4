package prober

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// pipeDialer is a fake dialer over net.Pipe: each dial starts a
// goroutine that reads the probe's head and answers per the upstream's
// mode (0 answer 200, 1 hang, 2 fail the dial with EMFILE). No real network, so synctest's fake clock
// drives the intervals, jitter and timeouts.
type pipeDialer struct {
	mode  [serval.UpstreamsMax]atomic.Int32
	dials [serval.UpstreamsMax]atomic.Int32
}

func (d *pipeDialer) dial(ctx context.Context, u *serval.Upstream) (net.Conn, error) {
	d.dials[u.Index].Add(1)
	if d.mode[u.Index].Load() == 2 {
		// What net's dial returns at the open file limit.
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	}
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		var head []byte
		buf := make([]byte, 512)
		for !bytes.Contains(head, []byte("\r\n\r\n")) {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			head = append(head, buf[:n]...)
		}
		if d.mode[u.Index].Load() == 1 {
			server.Read(buf) // until the prober closes its end
			return
		}
		server.Write([]byte(ok200))
	}()
	return client, nil
}

// TestScheduling: with Interval 1 s and Jitter 100 ms, ten seconds of
// (fake) time give each upstream about ten probes; a hanging upstream
// is taken out by the 200 ms timeout after three probes; Close leaves no
// goroutine behind (synctest.Test fails if any is still blocked).
func TestScheduling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &pipeDialer{}
		d.mode[1].Store(1)
		table := []serval.Upstream{serval.NewUpstream("a", 80, 0), serval.NewUpstream("b", 80, 1)}
		hs := health.New(2)
		p, err := New(Config{Upstreams: table, Health: hs, Dial: d.dial, Interval: time.Second,
			Jitter: 100 * time.Millisecond, Timeout: 200 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10*time.Second + 50*time.Millisecond)
		synctest.Wait()
		// The interval runs from the end of one probe to the start of the
		// next. Upstream 0 answers at once: first probe within 100 ms,
		// then every 1 s ± 100 ms, so 10 or 11 probes. Upstream 1 hangs
		// for the 200 ms timeout: a cycle of 1.2 s ± 100 ms, 8 or 9.
		for i, want := range [][2]uint64{{10, 11}, {8, 9}} {
			st := p.Stats(serval.UpstreamIndex(i))
			if st.Probes < want[0] || st.Probes > want[1] {
				t.Errorf("upstream %d: %d probes in 10 s, want %d..%d", i, st.Probes, want[0], want[1])
			}
		}
		if !hs.Healthy(0) || hs.Healthy(1) {
			t.Fatalf("health: %v %v, want true false", hs.Healthy(0), hs.Healthy(1))
		}
		if st := p.Stats(1); st.Failures != st.Probes || st.Downs != 1 {
			t.Fatalf("hanging upstream stats %+v", st)
		}
		// It recovers: two good probes bring it back.
		d.mode[1].Store(0)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if !hs.Healthy(1) || p.Stats(1).Ups != 1 {
			t.Fatalf("not restored: stats %+v", p.Stats(1))
		}
		p.Close()
	})
}

// TestContextCancelStops: cancelling Start's context stops the probes
// too (Close then returns at once).
func TestContextCancelStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &pipeDialer{}
		hs := health.New(1)
		p, _ := New(Config{Upstreams: []serval.Upstream{serval.NewUpstream("a", 80, 0)}, Health: hs, Dial: d.dial,
			Interval: time.Second, Logger: quietLogger()})
		ctx, cancel := context.WithCancel(context.Background())
		p.Start(ctx)
		time.Sleep(3 * time.Second)
		cancel()
		synctest.Wait()
		n := d.dials[0].Load()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if d.dials[0].Load() != n {
			t.Fatal("probes continued after cancel")
		}
		p.Close()
	})
}

// TestLocalDialFailureNoVerdict: probes that cannot be made because this
// process is out of descriptors (the dial fails with EMFILE) neither take
// a healthy upstream out nor keep an unhealthy one out: a balancer at its
// open file limit used to mark every backend down and answer 503 for two
// probe intervals after the connections that exhausted it were gone.
func TestLocalDialFailureNoVerdict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &pipeDialer{}
		d.mode[1].Store(1) // hangs: taken out by its timeouts
		table := []serval.Upstream{serval.NewUpstream("a", 80, 0), serval.NewUpstream("b", 80, 1)}
		hs := health.New(2)
		p, err := New(Config{Upstreams: table, Health: hs, Dial: d.dial, Interval: time.Second,
			Timeout: 200 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close() // also when a check fails: no goroutine left in the bubble
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if !hs.Healthy(0) || hs.Healthy(1) {
			t.Fatalf("health before: %v %v, want true false", hs.Healthy(0), hs.Healthy(1))
		}
		d.mode[0].Store(2)
		d.mode[1].Store(2)
		time.Sleep(300 * time.Millisecond) // a hanging probe in flight times out
		synctest.Wait()
		before := [2]Stats{p.Stats(0), p.Stats(1)}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !hs.Healthy(0) || hs.Healthy(1) {
			t.Fatalf("health after local dial failures: %v %v, want true false (unchanged)", hs.Healthy(0), hs.Healthy(1))
		}
		for i := range 2 {
			if st := p.Stats(serval.UpstreamIndex(i)); st != before[i] {
				t.Errorf("upstream %d: stats %+v after local dial failures, want %+v (nothing recorded)", i, st, before[i])
			}
		}
		if d.dials[0].Load() < 8 {
			t.Fatalf("only %d dials: the probes stopped", d.dials[0].Load())
		}
		// Resources back: the probes decide again.
		d.mode[0].Store(0)
		d.mode[1].Store(0)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if !hs.Healthy(0) || !hs.Healthy(1) {
			t.Fatalf("health after recovery: %v %v, want true true", hs.Healthy(0), hs.Healthy(1))
		}
	})
}
