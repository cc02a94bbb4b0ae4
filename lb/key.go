package lb

import (
	"github.com/servalproxy/serval"
)

// KeyKind says which part of a request a hashing selector hashes.
type KeyKind uint8

const (
	// KeyIP hashes the client's IP address (not the port): one client,
	// one upstream, as nginx's ip_hash. Clients behind one NAT share it.
	KeyIP KeyKind = iota + 1
	// KeyHeader hashes the value of the header Key.Name (e.g. a user or
	// tenant id a front tier sets).
	KeyHeader
	// KeyCookie hashes the value of the cookie Key.Name.
	KeyCookie
	// KeyPath hashes the request path without the query: caches behind
	// the proxy each hold a slice of the URL space.
	KeyPath
)

// Key names what a hashing selector hashes.
type Key struct {
	Kind KeyKind
	// Name is the header or cookie name for KeyHeader and KeyCookie.
	Name string
}

// String returns the key in ParsePolicy's syntax after "hash:".
func (k Key) String() string {
	switch k.Kind {
	case KeyIP:
		return "ip"
	case KeyHeader:
		return "header:" + k.Name
	case KeyCookie:
		return "cookie:" + k.Name
	case KeyPath:
		return "path"
	}
	return "unknown"
}

// keyHash hashes the request's key. ok is false when the request has no
// such key (no client address, header or cookie, or an empty header or
// cookie value, as nginx's hash takes an empty key); the caller then
// picks an upstream some other way instead of sending every keyless
// request to the same one.
func keyHash(k *Key, x *serval.Exchange, req *serval.Request) (h uint64, ok bool) {
	switch k.Kind {
	case KeyIP:
		if x == nil || !x.ClientAddr.IsValid() {
			return 0, false
		}
		// As16 maps IPv4 into IPv6 form: one address, one hash, no
		// allocation (the array stays on the stack).
		a := x.ClientAddr.Addr().As16()
		return hashBytes(a[:]), true
	case KeyHeader:
		if req == nil {
			return 0, false
		}
		v := req.Get(k.Name)
		return hashBytes(v), len(v) > 0
	case KeyCookie:
		if req == nil {
			return 0, false
		}
		v, found := cookieValue(req, k.Name)
		return hashBytes(v), found && len(v) > 0
	case KeyPath:
		if req == nil || len(req.Path) == 0 {
			return 0, false
		}
		return hashBytes(req.Path), true
	}
	return 0, false
}

// FNV-1a 64 constants (FIPS-free, well known, deterministic across
// processes: every proxy replica maps a key to the same upstream, which
// a per-process maphash seed would not).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashBytes is FNV-1a over b, finished with a 64-bit mixer so that the
// low bits used by "mod table size" depend on every input byte (FNV-1a
// alone has weak low bits for short keys).
func hashBytes(b []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return mix64(h)
}

// hashString is hashBytes for a string (startup only).
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the MurmurHash3 / SplitMix64 finaliser: a bijection that
// spreads every input bit over every output bit.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// cookieFieldsMax bounds the Cookie fields scanned, and cookiePairsMax
// the pairs scanned in one field: a request with thousands of tiny
// cookies must not make selection scan them all.
const (
	cookieFieldsMax = 8
	cookiePairsMax  = 64
)

// cookieValue finds cookie name in the request's Cookie fields (RFC 6265
// §5.4: "name=value; name=value"). Names compare case-sensitively, as
// browsers do. found is false when there is no such cookie within the
// scan bounds.
func cookieValue(req *serval.Request, name string) (value []byte, found bool) {
	fields := 0
	for i := range req.Fields {
		f := &req.Fields[i]
		if !serval.EqualFold(f.Name, "cookie") {
			continue
		}
		if v, ok := findCookie(f.Value, name); ok {
			return v, true
		}
		if fields++; fields == cookieFieldsMax {
			break
		}
	}
	return nil, false
}

// findCookie scans one Cookie field value for name.
func findCookie(v []byte, name string) ([]byte, bool) {
	for pairs := 0; len(v) > 0 && pairs < cookiePairsMax; pairs++ {
		end := indexByte(v, ';')
		pair := trimSpace(v[:end])
		if end < len(v) {
			v = v[end+1:]
		} else {
			v = v[len(v):]
		}
		eq := indexByte(pair, '=')
		if eq == len(pair) || string(trimSpace(pair[:eq])) != name {
			continue
		}
		val := trimSpace(pair[eq+1:])
		// RFC 6265 allows a quoted value; the quotes are not part of it.
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		return val, true
	}
	return nil, false
}

// indexByte returns the index of c in b, or len(b).
func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return len(b)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
