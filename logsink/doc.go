// Package logsink keeps operational logging from stalling or flooding a
// proxy: Writer takes log lines without ever waiting for the output, and
// Limit caps how many records of one message pass per interval.
//
// A slog handler writes each record synchronously to its io.Writer, from
// the goroutine that logs. When that writer is a pipe whose reader stalls
// (a log shipper that is restarting, a terminal that is paused), every
// goroutine that logs waits: a request that fails, and logs it, hangs
// with it. Writer decouples them: records are copied into a buffer that
// a goroutine of its own writes out; when the output falls a whole
// buffer behind, records are dropped and counted, and the count is
// written once the output takes bytes again. A failure that hits every
// request (a backend down under load) logs a line per request; Limit
// lets a burst of each message through per interval and then one line
// saying how many it held back.
//
// Layer: infrastructure, standard library only.
package logsink
