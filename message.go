package serval

// Version is an HTTP version as major*10+minor: 10 for HTTP/1.0, 11 for
// HTTP/1.1.
type Version uint8

const (
	Version10 Version = 10
	Version11 Version = 11
)

// String returns "HTTP/1.0" or "HTTP/1.1" (constant strings, no allocation).
func (v Version) String() string {
	switch v {
	case Version10:
		return "HTTP/1.0"
	case Version11:
		return "HTTP/1.1"
	}
	return "HTTP/?"
}

// Method identifies the well-known methods so hot paths compare an integer.
// Any token is a valid method (RFC 9110 §9.1); unknown ones are
// MethodOther and keep their bytes in Request.Method.
type Method uint8

const (
	MethodOther Method = iota
	MethodGet
	MethodHead
	MethodPost
	MethodPut
	MethodDelete
	MethodConnect
	MethodOptions
	MethodTrace
	MethodPatch
)

// Idempotent reports whether RFC 9110 §9.2.2 calls the method idempotent,
// which makes a retry after a failed attempt safe.
func (m Method) Idempotent() bool {
	switch m {
	case MethodGet, MethodHead, MethodPut, MethodDelete, MethodOptions, MethodTrace:
		return true
	}
	return false
}

// TargetForm is the form of a request-target (RFC 9112 §3.2).
type TargetForm uint8

const (
	FormOrigin    TargetForm = iota // /path?query
	FormAbsolute                    // http://host/path?query (normalised: Host comes from it)
	FormAuthority                   // host:port, CONNECT only
	FormAsterisk                    // *, OPTIONS only
)

// Header is one header field as views into a connection buffer. Name keeps
// the case it was received with; compare with EqualFold.
type Header struct {
	Name  []byte
	Value []byte
}

// Request is a parsed request head. All []byte fields are views into the
// connection's read buffer: valid until the next request on the connection
// is read, and never to be retained by a hook after it returns.
//
// A Request is reused for every request of a connection: Init sizes its
// field table once, Reset clears it without freeing.
type Request struct {
	Method   []byte
	MethodID Method
	// Target is the request-target exactly as received.
	Target []byte
	Form   TargetForm
	// Path is the path of the target ("/" at least for origin and
	// absolute form, "*" for asterisk form, empty for authority form).
	Path []byte
	// Query is the query without its '?', nil when the target had none.
	Query []byte
	// Host is the Host field's value, or the authority of an
	// absolute-form target (which overrides Host, RFC 9112 §3.2.2).
	Host    []byte
	Version Version
	// Fields holds every header field in received order. Its capacity,
	// set by Init, is the field-count limit.
	Fields []Header

	// ContentLength is the body length; -1 when the request has no
	// Content-Length (a chunked body, or no body at all).
	ContentLength int64
	// Chunked is true when Transfer-Encoding ends in chunked.
	Chunked bool
	// Close is true when the connection must close after this exchange:
	// "Connection: close", or HTTP/1.0 without "Connection: keep-alive".
	Close bool
	// ExpectContinue is true for "Expect: 100-continue".
	ExpectContinue bool
	// Upgrade is true when Connection lists "upgrade" and an Upgrade field
	// names a protocol.
	Upgrade bool
	// HeadBytes is the length of the head, final CRLF included.
	HeadBytes int
}

// Init gives the request a field table of fieldsMax entries. Call once at
// startup; it is the only allocation a Request makes.
func (r *Request) Init(fieldsMax int) {
	r.Fields = make([]Header, 0, fieldsMax)
	r.Reset()
}

// Reset clears the request for the next head, keeping the field table.
func (r *Request) Reset() {
	f := r.Fields[:0]
	*r = Request{Fields: f, ContentLength: -1}
}

// HasBody reports whether a body follows the head.
func (r *Request) HasBody() bool { return r.Chunked || r.ContentLength > 0 }

// Get returns the value of the first field named name (ASCII
// case-insensitive), or nil.
func (r *Request) Get(name string) []byte { return getField(r.Fields, name) }

// Response is a parsed response head; views as in Request.
type Response struct {
	Version Version
	Status  int
	Reason  []byte
	Fields  []Header

	// ContentLength is the body length, -1 when absent.
	ContentLength int64
	// Chunked is true when Transfer-Encoding ends in chunked.
	Chunked bool
	// Close is true when the upstream said "Connection: close" or spoke
	// HTTP/1.0 without keep-alive.
	Close bool
	// HeadBytes is the length of the head, final CRLF included.
	HeadBytes int
}

// Init gives the response a field table of fieldsMax entries.
func (r *Response) Init(fieldsMax int) {
	r.Fields = make([]Header, 0, fieldsMax)
	r.Reset()
}

// Reset clears the response, keeping the field table.
func (r *Response) Reset() {
	f := r.Fields[:0]
	*r = Response{Fields: f, ContentLength: -1}
}

// Get returns the value of the first field named name, or nil.
func (r *Response) Get(name string) []byte { return getField(r.Fields, name) }

func getField(fields []Header, name string) []byte {
	for i := range fields {
		if EqualFold(fields[i].Name, name) {
			return fields[i].Value
		}
	}
	return nil
}

// EqualFold reports whether b equals s under ASCII case folding. It does
// not allocate (bytes.EqualFold would need s as []byte).
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
