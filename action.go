package serval

// ActionKind says what the server does after OnRequest.
type ActionKind uint8

const (
	// ActionContinue forwards the request to the upstream SelectUpstream
	// picks.
	ActionContinue ActionKind = iota
	// ActionRespond sends a direct response (Status, Headers, Body).
	ActionRespond
	// ActionReject answers Status with Reason as the body and closes the
	// connection when the request body was not read.
	ActionReject
	// ActionStream sends the head (Status, ContentType, Headers) and then
	// pulls the body from the handler's NextChunk, chunked-framed by the
	// server.
	ActionStream
)

// Action is a handler's decision. It is a value; building one never
// allocates. Headers and Body must stay valid until the response is
// written: use the buffer the hook was given, or static data.
type Action struct {
	Kind        ActionKind
	Status      int
	ContentType string
	// Headers are extra response fields. The server writes Content-Length
	// or Transfer-Encoding itself and drops them (and Connection: set
	// Close) from Headers. A Date here replaces the one the server writes.
	// ContentType is sent as Content-Type: do not put a Content-Type in
	// Headers too, or the response carries two. A name that is not
	// a token, or a value (or ContentType) with CR, LF, NUL or another
	// control byte but HTAB, is never written: the response becomes a 500
	// (a value taken from a client could otherwise inject fields). The
	// proxy checks what OnUpstreamRequest, OnResponse and RewritePath
	// leave the same way.
	Headers []Header
	Body    []byte
	// Chunked sends a direct response body with chunked framing instead of
	// Content-Length.
	Chunked bool
	// ContentLength, for ActionStream, sends the streamed body with this
	// Content-Length and no chunk framing when > 0; the handler must then
	// produce exactly that many bytes (fewer or more closes the connection).
	ContentLength int64
	// Close closes the connection after the response.
	Close bool
	// Reason is the body of a Reject, and reaches OnLog (LogEntry.Reason)
	// for any kind.
	Reason string
}

// Continue forwards the request.
func Continue() Action { return Action{Kind: ActionContinue} }

// Respond answers directly with status and body.
func Respond(status int, contentType string, body []byte) Action {
	return Action{Kind: ActionRespond, Status: status, ContentType: contentType, Body: body}
}

// Reject answers status with reason as a text body.
func Reject(status int, reason string) Action {
	return Action{Kind: ActionReject, Status: status, Reason: reason}
}

// Stream starts a streamed response; the body comes from NextChunk.
func Stream(status int, contentType string) Action {
	return Action{Kind: ActionStream, Status: status, ContentType: contentType}
}

// ErrorActionKind says what the proxy does after OnError.
type ErrorActionKind uint8

const (
	// ErrorDefault answers the error's own status (502, 504, ...).
	ErrorDefault ErrorActionKind = iota
	// ErrorRespond sends Response instead.
	ErrorRespond
	// ErrorRetry selects an upstream again (SelectUpstream is called once
	// more) and retries there. Honoured only while nothing was sent to the
	// client and the request body can be replayed (there is none, it was
	// small enough to be wholly buffered, or it is streamed and the
	// failed attempt had not started reading it from the client, as after
	// a failed connect), and at most RetriesMax times. The handler asked for it, so it decides whether a
	// non-idempotent request may reach a second upstream: check
	// Request.MethodID.Idempotent() and ProxyError.Phase (a failure after
	// the request was written may have been executed) before retrying.
	ErrorRetry
)

// ErrorAction is OnError's decision.
type ErrorAction struct {
	Kind ErrorActionKind
	// Response is sent for ErrorRespond: an ActionRespond or ActionReject
	// with a status in [200, 999], sent with Content-Length (none for
	// 204 and 304, which have no body). Any other action (the zero
	// Action, a Continue, a Stream) or status is answered 500.
	Response Action
}
