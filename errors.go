package serval

import "errors"

// StatusError is an operating error that maps to an HTTP status: bad peer
// input, a limit crossed, an upstream failure. Packages declare their
// errors as package-level *StatusError values so returning one does not
// allocate.
type StatusError struct {
	Status int    // the status code the client gets
	Msg    string // short, lower case, prefixed by the package
}

func (e *StatusError) Error() string { return e.Msg }

// ConfigError reports an invalid configuration value.
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string { return "serval: config " + e.Field + ": " + e.Msg }

// Phase names where in an exchange an error happened, for logs.
type Phase uint8

const (
	PhaseNone          Phase = iota
	PhaseClientHead          // reading or parsing the client's request head
	PhaseClientBody          // reading the client's request body
	PhaseConnect             // dialling the upstream
	PhaseUpstreamWrite       // writing the request to the upstream
	PhaseUpstreamHead        // reading the upstream's response head
	PhaseUpstreamBody        // reading the upstream's response body
	PhaseClientWrite         // writing the response to the client
	PhaseHandler             // the handler's own failure: a stream's NextChunk error, or a body longer or shorter than it declared
)

var phaseNames = [...]string{"none", "client_head", "client_body", "connect", "upstream_write", "upstream_head", "upstream_body", "client_write", "handler"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}

// LocalResourceError reports whether err is this host running out of
// a resource (file descriptors, socket buffers, memory: EMFILE, ENFILE,
// ENOBUFS, ENOMEM), as a dial fails when the process is at its open file
// limit. Such a failure says nothing about the peer: health checks must
// not count it against an upstream, or a balancer at its descriptor limit
// takes every healthy backend out and keeps answering 503 after the
// connections that exhausted it are gone.
func LocalResourceError(err error) bool {
	for _, e := range localResourceErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
