// Package accesslog writes an access log: one line per finished request
// (logfmt: time, request id, client, method, path and query, status, bytes
// both ways, upstream, reuse, attempts, timings, and the failure if any),
// as nginx's access_log does.
//
// A Writer is a serval.LogHook. It formats each line into one of two
// buffers allocated at New, without allocating, and writes whole buffers
// from its own goroutine (Run): when the buffer fills, and at least once
// per FlushInterval. A request never waits for the disk: when the output
// falls so far behind that both buffers are full, lines are dropped,
// counted, and reported through the logger.
package accesslog
