// Package serval is the vocabulary of the Serval framework: the types every
// other package speaks (Request, Response, Header views, Upstream, Exchange,
// Action, LogEntry), the small interfaces users compose (Handler and its
// optional hooks, Pool, Metrics, Tracer) and the named limits.
//
// Layer 0: it imports the standard library only. Parsing lives in http1,
// connection handling in server, forwarding in proxy, selection in lb.
//
// Memory rule: everything a request touches is sized at startup. Views
// ([]byte fields of Request, Response, Header) point into a connection's
// buffers and are valid only until the hook that received them returns.
package serval
