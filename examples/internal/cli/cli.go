package cli

import (
	"flag"
	"strconv"
)

// PortMax and ConnsMax bound --port and --max-conns.
const (
	PortMax  = 65535
	ConnsMax = 1 << 20
)

// CheckCommon returns the usage error of the flags every example server
// has, "" when there is none: a stray argument, --port outside [0,
// PortMax], --max-conns outside [1, ConnsMax].
func CheckCommon(fs *flag.FlagSet, port, maxConns int) string {
	switch {
	case fs.NArg() > 0:
		return "unexpected argument " + strconv.Quote(fs.Arg(0))
	case port < 0 || port > PortMax:
		return "--port must be in [0, 65535]"
	case maxConns < 1 || maxConns > ConnsMax:
		return "--max-conns must be in [1, 1048576]"
	}
	return ""
}
