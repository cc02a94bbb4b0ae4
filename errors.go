package serval

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
)

var phaseNames = [...]string{"none", "client_head", "client_body", "connect", "upstream_write", "upstream_head", "upstream_body", "client_write"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}
