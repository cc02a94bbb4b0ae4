package server

import "time"

// Connection goroutines outlive their connections.
//
// A goroutine started for each accepted connection begins on a small
// stack and grows it, a copy each time, to the depth a proxied request
// reaches: on connections that carry one request each (clients that do
// not keep alive), the copies cost about as much as the four keep-alive
// socket options the net package sets on an accepted socket (seven per
// cent of the proxy's time, measured). So a slot keeps its goroutine: when
// its connection ends, the goroutine parks on the slot's run channel, its
// stack grown, and the accept loop wakes it for the slot's next
// connection; the free list hands out the last freed slot first, so the
// slots that get connections are those whose goroutines wait. A
// goroutine parked for workerIdleMax exits, and stops its session's
// request body pump as it goes (a burst's goroutines do not stay for
// good), as do all of them when Serve returns. A hook that
// locks its goroutine to its thread (runtime.LockOSThread) must unlock
// it before it returns: the goroutine, and so the thread, serve the
// slot's later connections.
//
// Who runs a slot's next connection is settled by the slot's wk state: the
// accept loop hands a connection to a parked goroutine by moving it from
// wkParked to wkHanded, and a goroutine leaves only by moving it from
// wkParked to wkNone; whichever compare-and-swap wins decides, so a
// connection is never handed to a goroutine that left, and never gets
// two.
const (
	wkNone   uint32 = iota // no goroutine: the accept loop starts one
	wkBusy                 // the goroutine runs a connection
	wkParked               // the goroutine waits for the slot's next connection
	wkHanded               // the accept loop handed it one; it is waking
)

// workerIdleMax is how long a slot's goroutine waits for the slot's next
// connection before it exits. (A variable for the tests.)
var workerIdleMax = 10 * time.Second

// start runs the slot's new connection (nc is set) on the slot's parked
// goroutine, or on a new one. Only the accept loop calls it.
func (c *slot[H]) start() {
	if c.wk.CompareAndSwap(wkParked, wkHanded) {
		c.run <- struct{}{} // buffered: never waits
		return
	}
	if c.run == nil {
		c.run = make(chan struct{}, 1)
		c.parkTimer = time.NewTimer(time.Hour)
		c.parkTimer.Stop()
	}
	c.wk.Store(wkBusy)
	c.srv.workers.Add(1)
	go c.work(c.srv.stopWorkers)
}

// work runs the slot's connections until it has waited workerIdleMax
// for one, or stop closes.
func (c *slot[H]) work(stop <-chan struct{}) {
	left := false // the goroutine leaves from await, not from inside serve
	defer func() {
		if !left {
			c.orphaned(stop)
		}
		c.srv.workers.Done()
	}()
	for {
		c.serve() // its release sets wkParked before it frees the slot
		if !c.await(stop) {
			left = true
			return
		}
	}
}

// orphaned settles the slot of a goroutine that leaves from inside
// serve: a hook called runtime.Goexit (t.FailNow in a test's handler),
// which serve's deferred release survives (it freed the slot, marked
// wkParked) but this loop does not. The slot has no goroutine then: the
// accept loop starts one for its next connection, or, when it handed the
// connection over already, one is started for it here. (A goroutine that
// left inside release itself never freed the slot: nothing to settle.)
func (c *slot[H]) orphaned(stop <-chan struct{}) {
	if c.wk.CompareAndSwap(wkParked, wkNone) || c.wk.Load() != wkHanded {
		return
	}
	<-c.run
	c.wk.Store(wkBusy)
	c.srv.workers.Add(1) // this goroutine's count is still held: Wait has not returned
	go c.work(stop)
}

// await parks the goroutine until the accept loop hands it the slot's
// next connection (true), or until it may leave (false).
func (c *slot[H]) await(stop <-chan struct{}) bool {
	c.parkTimer.Reset(workerIdleMax)
	select {
	case <-c.run:
	case <-c.parkTimer.C:
		// The session's body pump leaves too (a later Forward starts it
		// again), while this goroutine still owns the slot: a burst of
		// uploads leaves no goroutine behind either.
		c.session.Close()
		if c.wk.CompareAndSwap(wkParked, wkNone) {
			return false
		}
		<-c.run // handed one as the wait ended
	case <-stop:
		if c.wk.CompareAndSwap(wkParked, wkNone) {
			c.parkTimer.Stop()
			return false
		}
		<-c.run
	}
	c.parkTimer.Stop()
	c.wk.Store(wkBusy)
	return true
}
