package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/prober"
	"github.com/servalproxy/serval/proxy"
	"github.com/servalproxy/serval/server"
	"github.com/servalproxy/serval/tlsconn"
)

// Flag defaults that are not a library constant.
const (
	portDefault         = 8080
	healthPathDefault   = "/"
	policyDefault       = "round-robin"
	allUnhealthyDefault = "503"
	ktlsDefault         = "auto"
	// connectionsMaxLimit bounds --max-conns: every slot's buffers are
	// allocated at startup (about 270 KiB of address space per slot with
	// the server's and the proxy's default sizes, touched only as
	// traffic fills them).
	connectionsMaxLimit = 1 << 20
	// shutdownTimeoutLimit is server.Config's bound on ShutdownTimeout.
	shutdownTimeoutLimit = 24 * time.Hour
	// clientTimeoutLimit is server.Config's bound on its read, idle and
	// write timeouts; their floor is a millisecond.
	clientTimeoutLimit = 24 * time.Hour
	// headBytesMin is the smallest --max-header-bytes: room for a request
	// line and a few fields (server.Config allows 256).
	headBytesMin = 1 << 10
	// failTimeoutDefault is --fail-timeout: nginx's fail_timeout. Its
	// bounds: a check every quarter of it, at most 40 a second; an hour
	// out is as good as forever.
	failTimeoutDefault = 10 * time.Second
	failTimeoutMin     = 100 * time.Millisecond
	failTimeoutMax     = time.Hour
)

func clientTimeoutOK(d time.Duration) bool { return d >= time.Millisecond && d <= clientTimeoutLimit }

// options are the parsed flags.
type options struct {
	host            string
	port            int
	backends        string
	debug           bool
	connectTimeout  time.Duration
	responseTimeout time.Duration
	tunnelIdle      time.Duration
	upstreamIdle    time.Duration
	shutdownTimeout time.Duration
	idlePerUpstream int
	backendMaxConns int
	connectionsMax  int
	workers         int
	acceptBalance   bool   // --workers: the least loaded worker takes new connections
	ticketSeed      []byte // a worker's session ticket seed (from the master, not a flag)
	hostSet         bool   // --host was given
	// healthFlag is the first health-checking flag given (validate:
	// --no-health leaves it nothing to do).
	healthFlag string
	portSet    bool // --port was given
	// activated is the listening socket the service manager passed
	// (systemd socket activation; activation.go), nil when it passed none.
	activated     *os.File
	activatedAddr string // where it listens (takeActivated)
	// draining is set when the drain starts (SIGINT/SIGTERM): /readyz
	// then answers 503 (not a flag; set by runWith).
	draining *atomic.Bool
	// drainNoted is closed once the drain's start was noted, or at exit.
	drainNoted chan struct{}

	// Client-side limits and timeouts (server.Config).
	headBytesMax  int
	fieldsMax     int
	bodyBytesMax  int64
	headerTimeout time.Duration
	bodyTimeout   time.Duration
	idleTimeout   time.Duration
	writeTimeout  time.Duration
	tcpKeepAlive  time.Duration

	// Load balancing and health.
	policy             lb.Policy
	policySet          bool // --lb or --policy was given
	acceptBalanceSet   bool // --accept-balance was given
	failTimeoutSet     bool // --fail-timeout was given
	stickyCookie       string
	healthPath         string
	healthPathSet      bool   // --health-path was given
	healthStatus       string // --health-status as given
	healthStatusMin    int    // the statuses the probe counts healthy (validate)
	healthStatusMax    int
	healthInterval     time.Duration
	healthTimeout      time.Duration
	failTimeout        time.Duration
	unhealthyThreshold uint
	healthyThreshold   uint
	passive5xx         bool
	retries            int
	ignoreClientAbort  bool
	trustForwarded     bool
	clientCertHeader   string
	via                string
	accessLog          string
	metricsAddr        string
	noHealth           bool
	allUnhealthy       lb.AllUnhealthyPolicy

	// TLS.
	certFile, keyFile  string
	clientCAFile       string
	upstreamTLS        string
	upstreamCAFile     string
	upstreamServerName string
	insecureSkipVerify bool
	ktls               tlsconn.Mode
}

// rawFlags are the flags parsed into strings before validation.
type rawFlags struct {
	policy, allUnhealthy, ktls, workers, bodyMax string
	version                                      bool
}

// defineFlags registers every flag on fs.
func defineFlags(fs *flag.FlagSet, o *options, r *rawFlags) {
	fs.StringVar(&o.host, "host", "", "listening address (default: all interfaces)")
	fs.IntVar(&o.port, "port", portDefault, "listening port (0 picks a free one)")
	fs.StringVar(&o.backends, "backends", "", "comma-separated backends host:port[=weight],...\n(default: two in-process echo backends on free loopback ports)")
	fs.BoolVar(&o.debug, "debug", false, "debug logging (one line per request)")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", serval.UpstreamConnectTimeoutDefault, "upstream connect timeout (TCP connect plus TLS handshake)")
	fs.DurationVar(&o.responseTimeout, "response-timeout", serval.UpstreamResponseTimeoutDefault, "upstream response timeout (head wait and each body read stall)")
	fs.DurationVar(&o.tunnelIdle, "tunnel-idle-timeout", proxy.TunnelIdleTimeoutDefault, "close an upgraded connection (WebSocket) after this long without a byte either way")
	fs.DurationVar(&o.upstreamIdle, "upstream-idle-timeout", pool.IdleTimeoutDefault, "close a pooled backend connection idle this long; keep it below the backends' own\nkeep-alive timeout (a backend's \"Keep-Alive: timeout=N\" is honoured by itself)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", serval.ShutdownTimeoutDefault, "on SIGINT/SIGTERM, how long requests in flight (downloads, uploads, WebSockets) may take\nto finish before their connections are closed; no new connection is taken meanwhile")
	fs.IntVar(&o.backendMaxConns, "backend-max-conns", 0, "cap on the connections (in use and idle) to each backend, per worker; a request that finds\nits backend at the cap goes to another (--retries) or gets 503 (0: no cap)")
	fs.IntVar(&o.idlePerUpstream, "idle-per-upstream", 0, "idle keep-alive connections kept per upstream\n(default: --max-conns, at most "+strconv.Itoa(pool.IdlePerUpstreamLimit)+": as many as can be in use at once, so a steady load never closes and re-dials them)")
	fs.IntVar(&o.connectionsMax, "max-conns", server.DefaultConfig().ConnectionsMax, "client connection slots (buffers for each are allocated at startup; per worker)")
	def := server.DefaultConfig()
	fs.IntVar(&o.headBytesMax, "max-header-bytes", def.HeadBytesMax, "largest request head (request line and header fields) in bytes: 431 above it\n(backends' response heads may have max(this, "+strconv.Itoa(serval.HeadBytesMaxDefault)+"): 502 above)")
	fs.IntVar(&o.fieldsMax, "max-header-fields", def.FieldsMax, "most header fields in a request head: 431 above it (backends' responses may have\nmax(this, "+strconv.Itoa(proxy.FieldsMaxDefault)+"))")
	fs.StringVar(&r.bodyMax, "max-body-size", "1g", "largest request body, in bytes or with a k, m or g suffix (powers of 1024),\nlike nginx's client_max_body_size: 413 above it")
	fs.DurationVar(&o.headerTimeout, "header-timeout", def.HeaderReadTimeout, "time a client has to send a whole request head (slowloris defence): 408 after it")
	fs.DurationVar(&o.bodyTimeout, "body-timeout", def.BodyReadTimeout, "longest stall while a client sends a request body (408 when nothing was answered yet)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", def.IdleTimeout, "close a client keep-alive connection idle this long between requests")
	fs.DurationVar(&o.writeTimeout, "write-timeout", def.WriteTimeout, "longest stall writing to a client (or a request body to a backend)")
	fs.DurationVar(&o.tcpKeepAlive, "tcp-keepalive", 0, "TCP keepalive on client connections, probing after this long idle (like nginx's\nso_keepalive; 0: off, every state has its own timeout; WebSocket tunnels have it anyway)")
	fs.StringVar(&r.workers, "workers", "1", "worker processes, each on one processor (GOMAXPROCS=1) taking new connections\nin turn (the least loaded first), like nginx's worker_processes; auto: one per processor\nthis process may use (GOMAXPROCS: CPU affinity and cgroup limits); 1 serves in this process")
	fs.BoolVar(&o.acceptBalance, "accept-balance", true, "with --workers: a worker takes a new connection only while it has no more open than the\nothers, so long-lived connections split evenly; false: the workers race for each one\n(cheaper when every request comes on a new connection)")

	fs.StringVar(&r.policy, "lb", policyDefault, "load-balancing algorithm: "+lb.PolicyNames)
	fs.StringVar(&r.policy, "policy", policyDefault, "alias of --lb")
	fs.StringVar(&o.stickyCookie, "sticky-cookie", "", "pin each client to a backend with a cookie of this name (falls back to --lb)")
	fs.StringVar(&o.healthPath, "health-path", healthPathDefault, "path of the active health probe (GET; see --health-status)")
	fs.StringVar(&o.healthStatus, "health-status", "", "statuses the active probe counts healthy: LOW-HIGH or one code\n(default: 200-399 with --health-path given; 200-499 for the default probe of /,\nwhich many healthy backends answer with 404, 403 or 401)")
	fs.DurationVar(&o.healthInterval, "health-interval", prober.IntervalDefault, "time between active health probes of each backend (0 disables probing)")
	fs.DurationVar(&o.failTimeout, "fail-timeout", failTimeoutDefault, "with --health-interval 0 (no active probes): a backend that failed requests is\nout of rotation this long, then tried with traffic again (nginx's fail_timeout); 0: out until restart")
	fs.DurationVar(&o.healthTimeout, "health-timeout", prober.TimeoutDefault, "timeout of one probe (dial, TLS, request, response); capped at --health-interval")
	fs.UintVar(&o.unhealthyThreshold, "unhealthy-threshold", health.FailuresDefault, "consecutive failures (probes or requests) that take a backend out")
	fs.UintVar(&o.healthyThreshold, "healthy-threshold", health.SuccessesDefault, "consecutive successful probes that bring a backend back")
	fs.BoolVar(&r.version, "version", false, "print the version (module version, VCS revision and time, Go version) and exit")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100), and /healthz\nand /readyz (200 while a backend is in rotation); with --workers, every worker's series\n(label worker) on this one address; off when empty")
	fs.StringVar(&o.accessLog, "access-log", "", "write a line per request to this file (appended; reopened on SIGHUP for log rotation),\nor to stdout with -; off when empty")
	fs.BoolVar(&o.trustForwarded, "trust-forwarded", false, "keep incoming X-Forwarded-For/-Proto/-Host (append the client to X-Forwarded-For): only\nbehind a proxy you trust, since clients can write these fields (default: replace them)")
	fs.StringVar(&o.via, "via", "", "add \"Via: 1.1 NAME\" to requests and responses (at most "+strconv.Itoa(proxy.ViaBytesMax)+" bytes; default: none)")
	fs.BoolVar(&o.ignoreClientAbort, "ignore-client-abort", false, "keep waiting for a backend's answer when the client closed its connection\n(default: the backend connection is closed one to two seconds after the request went to it, status 499 in the log, as nginx does)")
	fs.IntVar(&o.retries, "retries", proxy.RetriesMaxDefault, "retry on another backend, at most this many times (0: never; at most "+strconv.Itoa(proxy.RetriesMaxLimit)+"), a request whose backend connection failed\n(refused, timed out, TLS handshake), or an idempotent one (GET, HEAD, PUT, DELETE, ...) whose backend closed\nor reset the connection without answering")
	fs.BoolVar(&o.passive5xx, "passive-5xx", false, "count 5xx responses as passive failures (default: only transport failures)")
	fs.BoolVar(&o.noHealth, "no-health", false, "no health checking at all: no probes, no passive checks")
	fs.StringVar(&r.allUnhealthy, "all-unhealthy", allUnhealthyDefault, "when no backend is healthy: 503 (with Retry-After) or try-all")

	fs.StringVar(&o.certFile, "cert", "", "PEM certificate chain: terminate TLS (HTTPS) on --port (needs --key)")
	fs.StringVar(&o.keyFile, "key", "", "PEM private key of --cert")
	fs.StringVar(&o.clientCAFile, "client-ca", "", "PEM CA file: require client certificates signed by it (mTLS; needs --cert)")
	fs.StringVar(&o.clientCertHeader, "client-cert-header", "", "tell backends who the client is (mTLS): the verified client certificate's\nidentity in this field (e.g. X-Forwarded-Client-Cert), in Envoy's XFCC syntax\n(Hash=<sha256>;Subject=\"...\";URI=...;DNS=...); the client's own field of that name is removed\n(kept, ours appended, with --trust-forwarded)")
	fs.StringVar(&o.upstreamTLS, "upstream-tls", "", "comma-separated backends (host:port, as in --backends) reached over HTTPS; probes to them use HTTPS too")
	fs.StringVar(&o.upstreamCAFile, "upstream-ca", "", "PEM CA file to verify HTTPS backends against (default: the system roots)")
	fs.StringVar(&o.upstreamServerName, "upstream-server-name", "", "TLS server name (SNI and verification) for HTTPS backends (default: each backend's host)")
	fs.BoolVar(&o.insecureSkipVerify, "insecure-skip-verify", false, "DANGEROUS: do not verify HTTPS backends' certificates")
	fs.StringVar(&r.ktls, "ktls", ktlsDefault, "kernel TLS offload: auto (offload when the kernel can, else user space), off, require")
}

// parseFlags parses args; ok is false when the program must exit with
// code (0 after --help, 2 on a usage error).
func parseFlags(args []string, out io.Writer) (o options, code int, ok bool) {
	var r rawFlags
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	fs.SetOutput(out)
	defineFlags(fs, &o, &r)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: lb [flags]\n\nServal's HTTP/1.1 load balancer: health-checked backends, several algorithms, TLS both ways.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0, false
		}
		return o, 2, false
	}
	if r.version {
		fmt.Fprintln(out, versionLine())
		return o, 0, false
	}
	var err error
	lbGiven, policyGiven := false, false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "health-path" {
			o.healthPathSet = true
		}
		if f.Name == "fail-timeout" {
			o.failTimeoutSet = true
		}
		switch f.Name {
		case "health-interval", "health-timeout", "health-path", "health-status", "unhealthy-threshold", "healthy-threshold", "all-unhealthy":
			if o.healthFlag == "" {
				o.healthFlag = f.Name
			}
		}
		o.acceptBalanceSet = o.acceptBalanceSet || f.Name == "accept-balance"
		o.hostSet = o.hostSet || f.Name == "host"
		o.portSet = o.portSet || f.Name == "port"
		if f.Name == "lb" || f.Name == "policy" {
			o.policySet = true
			lbGiven, policyGiven = lbGiven || f.Name == "lb", policyGiven || f.Name == "policy"
		}
		if f.Name == "backends" && strings.TrimSpace(o.backends) == "" && err == nil {
			// Given but empty (an unset variable in a unit file, say):
			// the demo backends would answer in place of the real ones.
			err = errors.New("--backends is empty: name the backends (leave the flag out for two in-process demo backends)")
		}
	})
	if err == nil && lbGiven && policyGiven {
		err = errors.New("--lb and --policy are one flag (an alias): give it once")
	}
	if err == nil {
		err = o.parseEnums(r)
	}
	if err == nil && fs.NArg() > 0 {
		err = errors.New("unexpected argument " + strconv.Quote(fs.Arg(0)))
	}
	if err == nil {
		err = o.validate()
	}
	if err == nil && o.idlePerUpstream == 0 {
		// Each client slot holds at most one upstream connection at a
		// time: an idle stack as deep as the slot table never closes a
		// connection that steady load will need again (a shallower one
		// churns: close, TIME_WAIT, re-dial, on every burst above it).
		o.idlePerUpstream = min(o.connectionsMax, pool.IdlePerUpstreamLimit)
	}
	if err != nil {
		fmt.Fprintln(out, "lb: "+err.Error())
		fs.Usage()
		return o, 2, false
	}
	return o, 0, true
}

// parseEnums turns the string flags into their library values.
func (o *options) parseEnums(r rawFlags) error {
	var err error
	if o.policy, err = lb.ParsePolicy(r.policy); err != nil {
		var pe *lb.PolicyError
		if errors.As(err, &pe) {
			return errors.New("--lb " + strconv.Quote(pe.Input) + ": " + pe.Msg)
		}
		return errors.New("--lb: " + err.Error())
	}
	if o.allUnhealthy, err = lb.ParseAllUnhealthy(r.allUnhealthy); err != nil {
		var pe *lb.PolicyError
		if errors.As(err, &pe) {
			return errors.New("--all-unhealthy " + strconv.Quote(pe.Input) + ": " + pe.Msg)
		}
		return errors.New("--all-unhealthy: " + err.Error())
	}
	if o.ktls, err = tlsconn.ParseMode(r.ktls); err != nil {
		return errors.New("--ktls: " + err.Error())
	}
	if o.workers, err = parseWorkers(r.workers); err != nil {
		return err
	}
	if o.bodyBytesMax, err = parseSize(r.bodyMax); err != nil {
		return errors.New("--max-body-size: " + err.Error())
	}
	return nil
}

// bodyBytesLimit bounds --max-body-size (server.Config's own bound).
const bodyBytesLimit = 1 << 62

// parseSize reads a byte count: digits, optionally followed by k, m or g
// (either case; powers of 1024), at least 1 and at most bodyBytesLimit.
func parseSize(v string) (int64, error) {
	digits, shift := v, 0
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift > 0 {
			digits = v[:n-1]
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 1 || digits[0] == '+' || n > bodyBytesLimit>>shift {
		return 0, errors.New("a size from 1 to 4 EiB (e.g. 1048576, 512k, 10m, 1g), not " + strconv.Quote(v))
	}
	return n << shift, nil
}

// parseWorkers reads --workers: a count, or auto for one worker per
// processor this process may use.
func parseWorkers(v string) (int, error) {
	if v == "auto" {
		return min(runtime.GOMAXPROCS(0), workersLimit), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errors.New("--workers: a number or auto, not " + strconv.Quote(v))
	}
	return n, nil
}

// validListenAddr reports whether addr is HOST:PORT with a port in
// [0, 65535] (the host, which may be empty, is checked by the listen).
func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535 && port[0] != '+'
}

// validate checks ranges and flag combinations.
func (o *options) validate() error {
	certHeaderErr := proxy.CheckClientCertHeader(o.clientCertHeader)
	switch {
	case o.port < 0 || o.port > 65535:
		return errors.New("--port out of range")

	case o.upstreamIdle < time.Millisecond || o.upstreamIdle > pool.TimeoutLimit:
		return errors.New("--upstream-idle-timeout must be in [1ms, " + pool.TimeoutLimit.String() + "]")
	case o.shutdownTimeout < 0 || o.shutdownTimeout > shutdownTimeoutLimit:
		return errors.New("--shutdown-timeout must be in [0, " + shutdownTimeoutLimit.String() + "]")
	case o.healthInterval != 0 && (o.healthInterval < prober.IntervalMin || o.healthInterval > prober.IntervalMax):
		return errors.New("--health-interval must be 0 (no probes) or in [" + prober.IntervalMin.String() + ", " + prober.IntervalMax.String() + "]")
	case o.healthTimeout <= 0:
		return errors.New("--health-timeout must be positive")
	case o.failTimeout != 0 && (o.failTimeout < failTimeoutMin || o.failTimeout > failTimeoutMax):
		return errors.New("--fail-timeout must be 0 (out until restart) or in [" + failTimeoutMin.String() + ", " + failTimeoutMax.String() + "]")
	case o.connectionsMax < 1 || o.connectionsMax > connectionsMaxLimit:
		return errors.New("--max-conns must be in [1, " + strconv.Itoa(connectionsMaxLimit) + "]")
	case o.headBytesMax < headBytesMin || o.headBytesMax > serval.HeadBytesMaxLimit:
		return errors.New("--max-header-bytes must be in [" + strconv.Itoa(headBytesMin) + ", " + strconv.Itoa(serval.HeadBytesMaxLimit) + "]")
	case o.fieldsMax < 1 || o.fieldsMax > serval.FieldsMaxLimit:
		return errors.New("--max-header-fields must be in [1, " + strconv.Itoa(serval.FieldsMaxLimit) + "]")
	case o.passive5xx && o.noHealth:
		return errors.New("--passive-5xx counts 5xx against health, which --no-health turns off: give one of them")
	case o.healthFlag != "" && o.noHealth:
		// A probe or threshold asked for would be ignored in silence.
		return errors.New("--" + o.healthFlag + " configures health checking, which --no-health turns off: give one of them")
	case o.failTimeoutSet && (o.noHealth || o.healthInterval != 0):
		return errors.New("--fail-timeout applies without active probes only (--health-interval 0; probes bring a backend back otherwise), and not with --no-health")
	case o.workers < 1 || o.workers > workersLimit:
		return errors.New("--workers must be in [1, " + strconv.Itoa(workersLimit) + "]")
	case o.retries < 0 || o.retries > proxy.RetriesMaxLimit:
		return errors.New("--retries must be in [0, " + strconv.Itoa(proxy.RetriesMaxLimit) + "]")
	case proxy.CheckVia(o.via) != nil:
		return errors.New("--via must be one token (with an optional :port) of at most " + strconv.Itoa(proxy.ViaBytesMax) + " bytes")
	case o.backendMaxConns < 0 || o.backendMaxConns > pool.ConnsPerUpstreamLimit:
		return errors.New("--backend-max-conns must be in [0, " + strconv.Itoa(pool.ConnsPerUpstreamLimit) + "]")
	case o.idlePerUpstream < 0 || o.idlePerUpstream > pool.IdlePerUpstreamLimit:
		return errors.New("--idle-per-upstream must be in [1, " + strconv.Itoa(pool.IdlePerUpstreamLimit) + "], or 0 for --max-conns")
	case (o.certFile == "") != (o.keyFile == ""):
		return errors.New("--cert and --key go together")
	case o.clientCAFile != "" && o.certFile == "":
		return errors.New("--client-ca needs --cert and --key")
	case certHeaderErr != nil:
		return errors.New("--client-cert-header: " + certHeaderErr.Error())
	case o.upstreamTLS == "" && (o.upstreamCAFile != "" || o.upstreamServerName != "" || o.insecureSkipVerify):
		// Without it every backend is spoken to in plain HTTP: the
		// flag asked for would be ignored in silence.
		return errors.New("--upstream-ca, --upstream-server-name and --insecure-skip-verify apply to the backends named in --upstream-tls, and there are none")
	case o.ktls == tlsconn.ModeRequire && o.certFile == "" && o.upstreamTLS == "":
		return errors.New("--ktls require needs TLS to offload: --cert and --key, or --upstream-tls")
	case o.metricsAddr != "" && !validListenAddr(o.metricsAddr):
		return errors.New("--metrics-addr must be HOST:PORT (e.g. 127.0.0.1:9100; port 0 picks a free one), not " + strconv.Quote(o.metricsAddr))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--connect-timeout", o.connectTimeout}, {"--response-timeout", o.responseTimeout}, {"--tunnel-idle-timeout", o.tunnelIdle},
		{"--header-timeout", o.headerTimeout}, {"--body-timeout", o.bodyTimeout}, {"--idle-timeout", o.idleTimeout}, {"--write-timeout", o.writeTimeout}} {
		if !clientTimeoutOK(d.v) {
			return errors.New(d.flag + " must be in [1ms, " + clientTimeoutLimit.String() + "], not " + d.v.String())
		}
	}
	if o.tcpKeepAlive != 0 && (o.tcpKeepAlive < time.Second || o.tcpKeepAlive > server.TCPKeepAliveMax) {
		return errors.New("--tcp-keepalive must be 0 or in [1s, " + server.TCPKeepAliveMax.String() + "], not " + o.tcpKeepAlive.String())
	}
	t := o.thresholds()
	if t.Validate() != nil {
		return errors.New("--unhealthy-threshold and --healthy-threshold must be in [1, " + strconv.Itoa(health.ThresholdMax) + "]")
	}
	if o.stickyCookie != "" && !http1.ValidFieldName([]byte(o.stickyCookie)) {
		return errors.New("--sticky-cookie must be a token (a cookie name: letters, digits and !#$%&'*+-.^_`|~)")
	}
	if !prober.ValidPath(o.healthPath) {
		return errors.New("--health-path must start with / and hold visible ASCII only, at most " + strconv.Itoa(prober.PathBytesMax) + " bytes")
	}
	lo, hi, ok := parseStatusRange(o.healthStatus)
	if !ok {
		return errors.New("--health-status must be a status code or a range LOW-HIGH within 100-599, not " + strconv.Quote(o.healthStatus))
	}
	if o.healthStatus == "" {
		// The default probe of / is a guess at a path: a backend
		// answering it 404 (an API), 403 (a docroot without an index) or
		// 401 is up. A path the user named is meant to answer 2xx-3xx.
		lo, hi = 200, 399
		if !o.healthPathSet {
			hi = 499
		}
	}
	o.healthStatusMin, o.healthStatusMax = lo, hi
	return nil
}

// parseStatusRange parses "LOW-HIGH" or one status code; "" gives 0, 0.
func parseStatusRange(s string) (lo, hi int, ok bool) {
	if s == "" {
		return 0, 0, true
	}
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// applyClientLimits sets the client-side limits and timeouts the flags
// ask for. The read buffer grows to hold a head of the limit with the
// longest chunk-size line or trailer section behind it; the proxy's own
// head bound (backends' response heads, and the request head it
// forwards) is never below the request head limit, nor below its
// default, so lowering the client limit does not refuse backends'
// larger response heads.
func applyClientLimits(cfg *server.Config, o *options) {
	cfg.HeadBytesMax = o.headBytesMax
	cfg.TargetBytesMax = min(cfg.TargetBytesMax, o.headBytesMax)
	cfg.ReadBufferBytes = max(cfg.ReadBufferBytes, cfg.ReadBufferBytesMin())
	cfg.FieldsMax = o.fieldsMax
	cfg.RequestBodyBytesMax = o.bodyBytesMax
	cfg.HeaderReadTimeout = o.headerTimeout
	cfg.BodyReadTimeout = o.bodyTimeout
	cfg.IdleTimeout = o.idleTimeout
	cfg.WriteTimeout = o.writeTimeout
	cfg.TCPKeepAlive = o.tcpKeepAlive
	cfg.Proxy.HeadBytesMax = max(o.headBytesMax, serval.HeadBytesMaxDefault)
	cfg.Proxy.FieldsMax = max(o.fieldsMax, proxy.FieldsMaxDefault)
}

// thresholds are the health thresholds the flags ask for.
func (o *options) thresholds() health.Thresholds {
	return health.Thresholds{Failures: uint32(min(o.unhealthyThreshold, 1<<31)), Successes: uint32(min(o.healthyThreshold, 1<<31))}
}

// probeTimeout is --health-timeout capped at the interval (a probe must
// end before the next one of the same backend is due).
func (o *options) probeTimeout() time.Duration { return min(o.healthTimeout, o.healthInterval) }

// versionLine describes the build: the module version (or "devel"), the
// VCS revision and time when the binary was built from a checkout, and
// the Go version.
func versionLine() string {
	v, rev, at, dirty, goVersion := "devel", "", "", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	line := "serval lb " + v
	if rev != "" {
		line += " (" + rev[:min(12, len(rev))]
		if dirty {
			line += "+dirty"
		}
		if at != "" {
			line += " " + at
		}
		line += ")"
	}
	return line + " " + goVersion
}
