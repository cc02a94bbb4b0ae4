package serval

import "time"

// Named limits. Every buffer, table, loop and retry in Serval is bounded by
// one of these constants or by a Config field validated against them.
const (
	// HeadBytesMaxDefault bounds a request or response head (request or
	// status line plus fields plus the final CRLF). nginx uses 8 KiB
	// buffers by default, HAProxy 16 KiB; browsers with large cookies need
	// more than 8 KiB, so 16 KiB.
	HeadBytesMaxDefault = 16 << 10
	// HeadBytesMaxLimit is the largest head a Config may allow: heads live
	// in the per-connection read buffer, which is allocated at startup.
	HeadBytesMaxLimit = 1 << 20

	// FieldsMaxDefault bounds the number of header fields in one head.
	// Real browsers send fewer than 30; 100 leaves room for proxies that
	// add fields on the way.
	FieldsMaxDefault = 100
	// FieldsMaxLimit is the largest FieldsMax a Config may allow.
	FieldsMaxLimit = 1024

	// TargetBytesMaxDefault bounds the request-target (414 above it).
	// RFC 9112 §3 recommends supporting at least 8000 octets.
	TargetBytesMaxDefault = 8 << 10

	// ChunkExtensionBytesMax bounds the chunk extensions of one chunk
	// line. Extensions carry nothing we use; the bound stops a peer from
	// making us scan an endless line.
	ChunkExtensionBytesMax = 1 << 10
	// ChunkSizeDigitsMax bounds the hex digits of a chunk size: 16 digits
	// are 64 bits; more would overflow.
	ChunkSizeDigitsMax = 16
	// TrailerBytesMaxDefault bounds the trailer section of a chunked body.
	TrailerBytesMaxDefault = 8 << 10

	// PathBytesMax is the size of Exchange.PathBuf, the scratch space for
	// a rewritten path; it matches the target limit.
	PathBytesMax = TargetBytesMaxDefault

	// InterimResponsesMax bounds the 1xx responses forwarded before the
	// final one; the proxy reads and drops further ones, up to
	// client.InterimReadMax, so an upstream cannot keep us looping.
	InterimResponsesMax = 8

	// UpstreamsMax bounds the upstreams one pool or selector holds (the
	// health bitmap has one bit each).
	UpstreamsMax = 64

	// StreamChunksMaxDefault bounds the chunks one streamed response may
	// produce, so a handler bug cannot keep a connection forever.
	StreamChunksMaxDefault = 1 << 20
)

// Timeout defaults. Each has a Config field; these are the values
// DefaultConfig uses.
const (
	HeaderReadTimeoutDefault       = 10 * time.Second
	BodyReadTimeoutDefault         = 30 * time.Second
	IdleTimeoutDefault             = 60 * time.Second
	WriteTimeoutDefault            = 30 * time.Second
	ShutdownTimeoutDefault         = 10 * time.Second
	SlotWaitTimeoutDefault         = 5 * time.Second
	UpstreamConnectTimeoutDefault  = 3 * time.Second
	UpstreamResponseTimeoutDefault = 30 * time.Second
)
