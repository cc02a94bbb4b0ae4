package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/servalproxy/serval/tlsconn"
)

// Worker processes (--workers N).
//
// A Go process is cheapest with one processor: a single-P process never
// wakes a second thread to hand work over, and none spins looking for
// work. On a machine with several cores, --workers N runs N such
// processes, as
// nginx runs worker processes: the master opens the listening socket,
// starts itself N times with GOMAXPROCS=1, each worker accepting from
// that socket when its turn comes (the least loaded first:
// balance_linux.go), forwards
// their logs in whole lines, restarts a worker that dies, passes SIGHUP on
// and, when it is told to stop, stops them (each drains its connections)
// and waits for them.
//
// Each worker is a whole balancer: its own connection slots, upstream
// pool and health view (active probes run in every worker; passive
// failures seen by one worker take the backend out of that worker only).
// Round robin and least-connections are per worker (worker k starts its
// rotation at turn k); the hash policies and sticky cookies pick the same
// backend in every worker.

// workerEnv names the environment variable that makes a process a worker:
// its value is the worker's index. The master sets it; nothing else should.
const workerEnv = "SERVAL_LB_WORKER"

// workerListenerFD is the descriptor of the listening socket a worker
// inherits (the first of exec.Cmd.ExtraFiles, the same socket for every
// worker); workerSeedFD is a pipe holding the session ticket seed (the
// second); workerReadyFD (the fifth, after workerMetricsFD and
// workerLoadFD) is a pipe's write end on which the worker says, with one
// byte, that it serves (workerServing): the master tells a worker that
// failed at its start from one that served by it, not by how long it ran
// (on a loaded machine a worker can take seconds to fail at start).
const (
	workerListenerFD = 3
	workerSeedFD     = 4
	workerReadyFD    = 7
)

// workerLifeFD (the sixth of exec.Cmd.ExtraFiles) is the read end of a
// pipe whose write end only the master holds: it reads end of file, once,
// when the master is gone however it went (workerMasterGone). Not
// PR_SET_PDEATHSIG: that signal comes again each time the dying master's
// threads exit one after another, and a worker took the second of one
// death as an operator's second signal and cut every request in flight
// (a kill -9 of the master under load, 3 times out of 4). The pipe also
// tells a worker whose master died before it watched.
const workerLifeFD = 8

// workersLimit bounds --workers.
const workersLimit = 256

// Restart policy: a worker that exits before it said it serves
// (workerReadyFD), or within workerFastExit of starting, failed fast. A
// worker that has never said it serves and fails workerFastExitsMax
// times in a row means the configuration cannot work: the master gives
// up and stops. One that has served before (a crash under load, an OOM
// kill, an operator's kill, however soon after its start) is restarted
// whatever happens, as nginx's master does: workerRestartDelay after it
// exits, doubling with each fast exit in a row up to
// workerRestartDelayMax. Meanwhile the other workers take its share (the
// master clears its slot of the load table); were every worker down at
// once, new connections would wait in the socket's queue (the master
// holds it open): the cap bounds that.
const (
	workerFastExit        = 2 * time.Second
	workerFastExitsMax    = 3
	workerRestartDelay    = 500 * time.Millisecond
	workerRestartDelayMax = 2 * time.Second // what queued connections may wait
	workerStopKillAfter   = 5 * time.Second // past the worker's own drain deadline
)

// workerIndex is this process's worker index, or -1 when it is not a
// worker (a single-process balancer, or the master).
func workerIndex() int {
	v, ok := os.LookupEnv(workerEnv)
	if !ok {
		return -1
	}
	k, err := strconv.Atoi(v)
	if err != nil || k < 0 || k >= workersLimit {
		return -1
	}
	return k
}

// workerListener is the listening socket a worker inherited.
func workerListener() (net.Listener, error) {
	f := os.NewFile(workerListenerFD, "lb-listener")
	if f == nil {
		return nil, errors.New("worker: no inherited listener")
	}
	defer f.Close() // FileListener holds its own descriptor
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, errors.New("worker: inherited descriptor is not a listener: " + err.Error())
	}
	return ln, nil
}

// workerTicketSeed reads the session ticket seed the master passed down:
// every worker derives the same ticket keys from it, so a TLS client
// resumes its session whichever worker its next connection reaches.
func workerTicketSeed() ([]byte, error) {
	f := os.NewFile(workerSeedFD, "lb-ticket-seed")
	if f == nil {
		return nil, errors.New("worker: no session ticket seed")
	}
	defer f.Close()
	seed, err := io.ReadAll(io.LimitReader(f, 2*tlsconn.SessionTicketSeedBytes))
	if err == nil && len(seed) != tlsconn.SessionTicketSeedBytes {
		err = errors.New("worker: session ticket seed of " + strconv.Itoa(len(seed)) + " bytes")
	}
	if err != nil {
		return nil, err
	}
	return seed, nil
}

// workerServing tells the master this worker serves: a byte on
// workerReadyFD, which is then closed. A no-op outside a worker.
func workerServing() {
	if workerIndex() < 0 {
		return
	}
	if f := os.NewFile(workerReadyFD, "lb-ready"); f != nil {
		f.Write([]byte{1})
		f.Close()
	}
}

// master supervises the workers.
type master struct {
	exe    string
	args   []string   // each worker's arguments
	seed   []byte     // session ticket seed, the same for every worker
	ln     *os.File   // the listening socket, shared by the workers
	life   *os.File   // workerLifeFD's pipe, read end: the master holds the write end
	load   *loadTable // the workers' connection counts (balance_linux.go)
	lfile  *os.File   // load's memfd, passed down
	mfiles []*os.File // each worker's metrics listener (--metrics-addr), or nil
	out    *lineSink
	log    *slog.Logger
	drain  time.Duration // a worker's shutdown deadline
	cancel context.CancelFunc

	mu     sync.Mutex
	procs  []*os.Process // running workers, by index; nil when none
	failed bool          // a worker kept failing: exit 1
	closed bool          // files closed: no worker starts any more
	// ready[k]: worker k said it serves, so it handles SIGHUP (before
	// its runtime set its handlers up, SIGHUP's default action would
	// end it); hupLater[k]: a SIGHUP came before that, to pass on then.
	ready, hupLater []bool
}

// errStopping refuses a worker start once the listeners are closed.
var errStopping = errors.New("load balancer: stopping")

// closeListeners closes the master's copy of the listening socket when
// the balancer stops. Each worker closes its own as it begins to drain;
// were the master's left open until the workers are gone, the kernel
// would go on completing connections nobody will accept, and their
// clients would wait, then be reset, instead of being refused at once.
func (m *master) closeListeners() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.ln.Close()
	}
}

// runMaster starts o.workers workers serving backends list and supervises
// them until ctx is done; it returns the exit code.
func runMaster(ctx context.Context, o *options, args []string, list string, logger *slog.Logger, stdout io.Writer, hup <-chan os.Signal) int {
	addr := net.JoinHostPort(o.host, strconv.Itoa(o.port))
	lf, bound, err := o.activated, "", error(nil)
	socket := slog.Attr{}
	if lf != nil {
		// The service manager's socket (takeActivated checked it).
		o.activated = nil
		bound, socket = o.activatedAddr, slog.String("socket", "activated")
	} else if lf, bound, err = listenShared(addr); err != nil {
		logger.Error("load balancer", "err", err)
		return 1
	}
	defer lf.Close()
	load, loadFile, err := newLoadTable(o.workers)
	if err != nil {
		logger.Error("load balancer: the workers' load table", "err", err)
		return 1
	}
	defer load.close()
	defer loadFile.Close()
	exe, err := os.Executable()
	if err != nil {
		logger.Error("load balancer: cannot find its own executable to start workers", "err", err)
		return 1
	}
	life, lifeW, err := os.Pipe()
	if err != nil {
		logger.Error("load balancer: the workers' pipe to their master", "err", err)
		return 1
	}
	defer life.Close()
	defer lifeW.Close() // after every worker is gone
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seed := make([]byte, tlsconn.SessionTicketSeedBytes)
	if _, err := rand.Read(seed); err != nil {
		logger.Error("load balancer: no randomness for the session ticket seed", "err", err)
		return 1
	}
	var mfiles []*os.File
	if o.metricsAddr != "" {
		var maddrs []string
		if mfiles, maddrs, err = listenWorkerMetrics(o.workers); err != nil {
			logger.Error("load balancer: --metrics-addr", "err", err)
			return 1
		}
		defer closeFiles(mfiles)
		stop, err := startMasterMetrics(o, maddrs, logger)
		if err != nil {
			logger.Error("load balancer: --metrics-addr", "err", err)
			return 1
		}
		defer stop()
	}
	m := &master{
		exe:    exe,
		mfiles: mfiles,
		args:   append(slices.Clone(args), "--backends", list),
		seed:   seed,
		ln:     lf,
		life:   life,
		load:   load,
		lfile:  loadFile,
		out:    &lineSink{w: stdout},
		log:    logger,
		drain:  serverConfig(o, logger, upstreamTLS(o)).ShutdownTimeout,
		cancel: cancel,
		procs:  make([]*os.Process, o.workers),
	}
	m.ready, m.hupLater = make([]bool, o.workers), make([]bool, o.workers)
	logger.Info("load balancer listening", "addr", bound, socket, "workers", o.workers, "backends", list, "pid", os.Getpid())
	var wg sync.WaitGroup
	for k := range o.workers {
		wg.Go(func() { m.keep(ctx, k) })
	}
	wg.Go(func() { m.forwardHUP(ctx, hup) })
	wg.Go(func() {
		<-ctx.Done()
		m.closeListeners()
	})
	wg.Wait()
	if m.failed {
		return 1
	}
	o.stopped(ctx, logger)
	return 0
}

// keep runs worker k until ctx is done, restarting it when it exits.
func (m *master) keep(ctx context.Context, k int) {
	fast, served := 0, false
	for ctx.Err() == nil {
		started := time.Now()
		var serving atomic.Bool
		cmd, sink, err := m.start(k, &serving)
		if err != nil {
			m.log.Error("starting worker", "worker", k, "err", err)
		} else {
			m.log.Info("worker started", "worker", k, "pid", cmd.Process.Pid)
			err = m.wait(ctx, k, cmd, sink)
			if ctx.Err() != nil {
				return
			}
			m.log.Error("worker exited", "worker", k, "pid", cmd.Process.Pid, "err", err, "ran", time.Since(started).Round(time.Millisecond))
		}
		// A worker that said it serves got past everything that can
		// fail at start (the configuration works): from then on it is
		// restarted whatever happens, however soon it dies. The fast
		// exits still space the restarts out.
		served = served || serving.Load()
		if time.Since(started) < workerFastExit || !serving.Load() {
			fast++
		} else {
			fast = 0
		}
		if fast >= workerFastExitsMax && !served {
			m.log.Error("worker keeps failing at start: stopping the load balancer", "worker", k, "failures", fast)
			m.mu.Lock()
			m.failed = true
			m.mu.Unlock()
			m.cancel()
			return
		}
		delay := workerRestartDelay
		if fast > 1 {
			delay = min(workerRestartDelay<<min(fast-1, 8), workerRestartDelayMax)
			m.log.Warn("worker exits soon after each start: restarting it later", "worker", k, "fast_exits", fast, "delay", delay)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// start starts worker k with its listening socket and its output going
// through the line sink; the returned channel is closed when all of the
// worker's output was forwarded and serving tells whether it said it
// served (workerReadyFD).
func (m *master) start(k int, serving *atomic.Bool) (*exec.Cmd, <-chan struct{}, error) {
	// The seed goes through a pipe, not the environment or the arguments
	// (which other users can read in /proc): the worker reads it and the
	// pipe is gone. 32 bytes fit in a pipe's buffer: the write never blocks.
	sr, sw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer sr.Close()
	_, err = sw.Write(m.seed)
	sw.Close()
	if err != nil {
		return nil, nil, err
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		rr.Close()
		rw.Close()
		return nil, nil, err
	}
	// The master's own program, not whatever its path names now: a
	// package upgrade or deploy that replaced the file would otherwise
	// have a worker restarted after a crash run the new version under
	// the old master (flags, descriptors and behaviour of another build
	// beside workers of this one). m.exe stays its name in ps.
	cmd := exec.Command(selfExe, m.args...)
	cmd.Args[0] = m.exe
	cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(k), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = w, w
	var mf *os.File // workerMetricsFD: none (closed in the worker) without --metrics-addr
	if m.mfiles != nil {
		mf = m.mfiles[k]
	}
	// workerListenerFD, workerSeedFD, workerMetricsFD, workerLoadFD,
	// workerReadyFD, workerLifeFD
	cmd.ExtraFiles = []*os.File{m.ln, sr, mf, m.lfile, rw, m.life}
	m.mu.Lock() // the listeners stay open until the worker has its copies
	if m.closed {
		err = errStopping
	} else {
		err = cmd.Start()
	}
	m.mu.Unlock()
	w.Close() // the worker has its own copies
	rw.Close()
	if err != nil {
		r.Close()
		rr.Close()
		return nil, nil, err
	}
	m.mu.Lock()
	m.procs[k] = cmd.Process
	m.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer r.Close()
		m.out.copyLines(r)
	})
	wg.Go(func() {
		defer rr.Close()
		var b [1]byte
		if n, _ := rr.Read(b[:]); n == 1 { // EOF when it exits first
			serving.Store(true)
			m.mu.Lock()
			m.ready[k] = true
			if m.hupLater[k] {
				m.hupLater[k] = false
				cmd.Process.Signal(syscall.SIGHUP)
			}
			m.mu.Unlock()
		}
	})
	go func() {
		wg.Wait()
		close(done)
	}()
	return cmd, done, nil
}

// wait waits for worker k to exit. When ctx is done first it asks the
// worker to stop (SIGTERM: it drains) and kills it if it outlives its
// drain deadline by workerStopKillAfter.
func (m *master) wait(ctx context.Context, k int, cmd *exec.Cmd, sink <-chan struct{}) error {
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		kill := time.NewTimer(m.drain + workerStopKillAfter)
		select {
		case err = <-exited:
		case <-kill.C:
			m.log.Error("worker did not stop in time: killing it", "worker", k, "pid", cmd.Process.Pid)
			cmd.Process.Kill()
			err = <-exited
		}
		kill.Stop()
	}
	m.mu.Lock()
	m.procs[k] = nil
	m.ready[k], m.hupLater[k] = false, false // the next one reads its files anew
	m.mu.Unlock()
	m.load.leave(k) // whatever it held, it accepts no more
	<-sink
	return err
}

// forwardHUP passes each reload request on to every running worker: at
// once to one that serves, once it serves to one still starting. A
// SIGHUP sent as a worker's runtime starts, before it handles the signal,
// ended it by the signal's default action: a reload (logrotate, a
// certificate renewal) that met a worker's start or restart cost that
// worker another restart, and at the balancer's start counted as a
// failure at start (three stop the balancer).
func (m *master) forwardHUP(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			m.mu.Lock()
			for k, p := range m.procs {
				switch {
				case p == nil:
				case m.ready[k]:
					p.Signal(syscall.SIGHUP)
				default:
					m.hupLater[k] = true
				}
			}
			m.mu.Unlock()
		}
	}
}

// lineSink writes whole lines from several workers to one writer, so
// their log lines never interleave mid-line.
type lineSink struct {
	mu sync.Mutex
	w  io.Writer
}

// lineBytesMax bounds one forwarded line; a longer one is forwarded in
// pieces.
const lineBytesMax = 64 << 10

// copyLines forwards r's output until EOF or an error, each write ending
// at a line's end: every complete line read so far goes out in one write
// (a worker logging each request costs the master one write per batch,
// not per line), and a partial line waits for its end.
func (s *lineSink) copyLines(r io.Reader) {
	buf := make([]byte, lineBytesMax)
	n := 0
	for {
		m, err := r.Read(buf[n:])
		n += m
		end := bytes.LastIndexByte(buf[:n], '\n') + 1
		if end == 0 && n == len(buf) {
			end = n // a line longer than the buffer: forward this piece
		}
		if end > 0 {
			s.mu.Lock()
			s.w.Write(buf[:end])
			s.mu.Unlock()
			n = copy(buf, buf[end:n])
		}
		if err != nil {
			if n > 0 { // the last line had no newline
				s.mu.Lock()
				s.w.Write(buf[:n])
				s.mu.Unlock()
			}
			return
		}
	}
}
