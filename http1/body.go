package http1

// BodyKind is how a message's body is framed.
type BodyKind uint8

const (
	BodyNone    BodyKind = iota // no body (HEAD response, 1xx, 204, 304, or a request without CL/TE)
	BodyLength                  // Content-Length bytes
	BodyChunked                 // chunked transfer coding
	BodyClose                   // until the connection closes (responses only)
)
