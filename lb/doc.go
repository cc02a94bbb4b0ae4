// Package lb is load balancing: selectors that pick an upstream from a
// fixed table, and Handler, the serval.Handler built from one.
//
// Layer 4 (strategy): it imports the serval vocabulary (layer 0) and
// health (layer 2), never proxy or server. One file per selection policy,
// each a small type whose doc comment names the algorithm and why.
//
// Selectors keep the caller's upstream table and return pointers into it,
// so selecting never allocates; the table must not change after the
// selector is built (swap a whole new selector instead).
package lb
