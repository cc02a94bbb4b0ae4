// Package http1 holds Serval's strict HTTP/1.1 codecs (RFC 9112): the
// request and response head parsers, the head writers, and the chunked
// transfer-coding decoder and encoders.
//
// Layer 1 (protocol): it imports the standard library and the serval root
// package only. It has no sockets, no goroutines and no state beyond what
// a caller passes in: bytes go in, views into those bytes come out.
//
// Every function here is allocation-free on its hot path. Parsed heads
// are views into the caller's buffer, every rejection is a package-level
// *serval.StatusError (returning one never allocates) whose Status is the
// answer the peer gets, and every loop over peer input is bounded by a
// named limit (Limits, serval.ChunkSizeDigitsMax,
// serval.ChunkExtensionBytesMax, the trailer bound given to
// ChunkedDecoder.Reset).
//
// The parsers are stricter than most: they reject anything RFC 9112 lets
// a recipient reject that has ever been used to smuggle requests (bare CR
// or LF, obs-fold, whitespace before a colon, Content-Length with
// Transfer-Encoding, differing Content-Length values, codings after
// chunked). A proxy that forwards what it cannot parse exactly is how
// request smuggling happens.
package http1
