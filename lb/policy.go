package lb

import (
	"errors"
	"strconv"
	"strings"

	"github.com/servalproxy/serval"
)

// PolicyKind names a selection algorithm.
type PolicyKind uint8

const (
	// PolicyRoundRobin: RoundRobin. The zero Policy.
	PolicyRoundRobin PolicyKind = iota
	// PolicyWeighted: Weighted (smooth weighted round robin).
	PolicyWeighted
	// PolicyLeastConn: LeastConn.
	PolicyLeastConn
	// PolicyP2C: P2C (power of two choices over peak EWMA).
	PolicyP2C
	// PolicyHash: Hash (Maglev consistent hashing) on Policy.Key.
	PolicyHash
)

// Policy is a selection algorithm and, for PolicyHash, its key.
type Policy struct {
	Kind PolicyKind
	Key  Key
}

// String returns the policy in ParsePolicy's syntax.
func (p Policy) String() string {
	switch p.Kind {
	case PolicyRoundRobin:
		return "round-robin"
	case PolicyWeighted:
		return "weighted"
	case PolicyLeastConn:
		return "least-conn"
	case PolicyP2C:
		return "p2c"
	case PolicyHash:
		return "hash:" + p.Key.String()
	}
	return "unknown"
}

// PolicyNames lists ParsePolicy's syntax, for flag help.
const PolicyNames = "round-robin|weighted|least-conn|p2c|hash:ip|hash:header:NAME|hash:cookie:NAME|hash:path"

// ParsePolicy parses one of PolicyNames.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "round-robin", "rr", "":
		return Policy{Kind: PolicyRoundRobin}, nil
	case "weighted", "wrr":
		return Policy{Kind: PolicyWeighted}, nil
	case "least-conn":
		return Policy{Kind: PolicyLeastConn}, nil
	case "p2c":
		return Policy{Kind: PolicyP2C}, nil
	case "hash:ip":
		return Policy{Kind: PolicyHash, Key: Key{Kind: KeyIP}}, nil
	case "hash:path":
		return Policy{Kind: PolicyHash, Key: Key{Kind: KeyPath}}, nil
	}
	var k Key
	if name, ok := strings.CutPrefix(s, "hash:header:"); ok {
		k = Key{Kind: KeyHeader, Name: name}
	} else if name, ok := strings.CutPrefix(s, "hash:cookie:"); ok {
		k = Key{Kind: KeyCookie, Name: name}
	} else {
		return Policy{}, &PolicyError{Input: s, Msg: "want " + PolicyNames}
	}
	if err := k.validate(); err != nil {
		return Policy{}, &PolicyError{Input: s, Msg: "bad name"}
	}
	return Policy{Kind: PolicyHash, Key: k}, nil
}

// PolicyError is a policy string ParsePolicy rejected.
type PolicyError struct {
	Input string
	Msg   string
}

func (e *PolicyError) Error() string { return "lb: policy " + strconv.Quote(e.Input) + ": " + e.Msg }

// validate checks the key's kind and, for headers and cookies, that the
// name is a token.
func (k Key) validate() error {
	switch k.Kind {
	case KeyIP, KeyPath:
		return nil
	case KeyHeader, KeyCookie:
		if isToken(k.Name) {
			return nil
		}
		return ErrKeyName
	}
	return ErrKeyKind
}

// ParseBackends parses "host:port[=weight],..." into an upstream table
// (indexes in order, Weight set; no "=weight" leaves Weight 0, which
// selectors count as 1). Weights must be in [1, WeightMax]. Addresses
// are checked by serval.ParseUpstreams, so the same list without
// weights parses the same way there.
func ParseBackends(list string) ([]serval.Upstream, error) {
	items := strings.Split(list, ",")
	if len(items) > serval.UpstreamsMax {
		return nil, ErrTooManyUpstream
	}
	addrs := make([]string, len(items))
	weights := make([]uint32, len(items))
	for i, item := range items {
		addr, w, hasWeight := strings.Cut(item, "=")
		addrs[i] = addr
		if !hasWeight {
			continue
		}
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil || n < 1 || n > WeightMax {
			return nil, errors.New("lb: backend " + strconv.Quote(item) + ": weight must be 1.." + strconv.Itoa(WeightMax))
		}
		weights[i] = uint32(n)
	}
	table, err := serval.ParseUpstreams(strings.Join(addrs, ","))
	if err != nil {
		return nil, err
	}
	for i := range table {
		table[i].Weight = weights[i]
	}
	return table, nil
}

// AllUnhealthyPolicy says what happens when no upstream is healthy.
type AllUnhealthyPolicy uint8

const (
	// AllUnhealthy503 (default): no upstream is selected; the client gets
	// 503 with a Retry-After hint. A health checker that marks every
	// upstream down is usually right (a bad deploy, a network split), and
	// failing fast sheds load from upstreams that may be recovering.
	AllUnhealthy503 AllUnhealthyPolicy = iota
	// AllUnhealthyTryAll: select as if every upstream were healthy (round
	// robin, or the full hash table for PolicyHash). Use it when a broken
	// checker is likelier than a total outage ("fail open", Envoy's panic
	// threshold at 0%).
	AllUnhealthyTryAll
)

// ParseAllUnhealthy parses "503" or "try-all".
func ParseAllUnhealthy(s string) (AllUnhealthyPolicy, error) {
	switch s {
	case "503", "":
		return AllUnhealthy503, nil
	case "try-all":
		return AllUnhealthyTryAll, nil
	}
	return 0, &PolicyError{Input: s, Msg: "want 503|try-all"}
}
