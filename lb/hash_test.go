package lb

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func pathReq(p string) *serval.Request {
	return &serval.Request{Path: []byte(p)}
}

// mapKeys returns the upstream index of each of k keys.
func mapKeys(t *testing.T, s *Hash, k int) []serval.UpstreamIndex {
	t.Helper()
	out := make([]serval.UpstreamIndex, k)
	for i := range out {
		u := s.Select(nil, pathReq("/item/"+strconv.Itoa(i)))
		if u == nil {
			t.Fatal("nil upstream")
		}
		out[i] = u.Index
	}
	return out
}

// TestHashMinimalDisruption: removing one of N upstreams moves at most
// 1.2/N of 10k keys (only the removed upstream's, ideally), and when it
// returns every key goes back.
func TestHashMinimalDisruption(t *testing.T) {
	const keys = 10000
	for _, n := range []int{3, 5, 10, serval.UpstreamsMax} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			hs := health.New(n)
			s, err := NewHash(table(n), hs, Key{Kind: KeyPath})
			if err != nil {
				t.Fatal(err)
			}
			before := mapKeys(t, s, keys)
			// Balance: each upstream owns about 1/n of the keys.
			var owned [serval.UpstreamsMax]int
			for _, u := range before {
				owned[u]++
			}
			for i := 0; i < n; i++ {
				if want := keys / n; owned[i] < want*7/10 || owned[i] > want*13/10 {
					t.Errorf("upstream %d owns %d keys, want about %d", i, owned[i], want)
				}
			}
			gone := serval.UpstreamIndex(n / 2)
			hs.MarkUnhealthy(gone)
			s.Refresh()
			during := mapKeys(t, s, keys)
			moved, movedOthers := 0, 0
			for i := range before {
				if during[i] == gone {
					t.Fatalf("key %d still maps to the removed upstream", i)
				}
				if during[i] != before[i] {
					moved++
					if before[i] != gone {
						movedOthers++
					}
				}
			}
			limit := 1.2 * keys / float64(n)
			t.Logf("n=%d: %d of %d keys moved (limit %.0f), %d not owned by the removed upstream", n, moved, keys, limit, movedOthers)
			if movedOthers != 0 {
				t.Errorf("%d keys of healthy upstreams moved", movedOthers)
			}
			if float64(moved) > limit {
				t.Errorf("%d keys moved, want <= %.0f", moved, limit)
			}
			hs.MarkHealthy(gone)
			s.Refresh()
			after := mapKeys(t, s, keys)
			for i := range before {
				if after[i] != before[i] {
					t.Fatalf("key %d: %d before, %d after the upstream returned", i, before[i], after[i])
				}
			}
		})
	}
}

// TestHashStaleTable: before the rebuild lands, keys of an unhealthy
// upstream are rehashed, never sent to it; others stay.
func TestHashStaleTable(t *testing.T) {
	hs := health.New(4)
	s, _ := NewHash(table(4), hs, Key{Kind: KeyPath})
	before := mapKeys(t, s, 1000)
	hs.MarkUnhealthy(1)
	for i := 0; i < 1000; i++ {
		u := s.Select(nil, pathReq("/item/"+strconv.Itoa(i)))
		if u == nil || u.Index == 1 {
			t.Fatalf("key %d: %v", i, u)
		}
		if before[i] != 1 && u.Index != before[i] {
			t.Fatalf("key %d moved from healthy %d to %d", i, before[i], u.Index)
		}
	}
	waitFor(t, func() bool { _, fresh := s.lookup.load(); return fresh })
}

func TestHashKeys(t *testing.T) {
	tab := table(8)
	mk := func(k Key) *Hash {
		s, err := NewHash(tab, nil, k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hdr := func(name, v string) *serval.Request {
		return &serval.Request{Fields: []serval.Header{{Name: []byte(name), Value: []byte(v)}}}
	}
	// Same key, same upstream; different keys spread.
	ip := mk(Key{Kind: KeyIP})
	seen := map[serval.UpstreamIndex]bool{}
	for i := 0; i < 64; i++ {
		x := &serval.Exchange{ClientAddr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1000)}
		x2 := &serval.Exchange{ClientAddr: netip.AddrPortFrom(x.ClientAddr.Addr(), 2000)}
		u := ip.Select(x, nil)
		if ip.Select(x2, nil) != u {
			t.Fatal("client port changed the upstream")
		}
		seen[u.Index] = true
	}
	if len(seen) < 6 {
		t.Fatalf("64 client IPs reached %d of 8 upstreams", len(seen))
	}
	h := mk(Key{Kind: KeyHeader, Name: "X-User"})
	if h.Select(nil, hdr("x-user", "alice")) != h.Select(nil, hdr("X-User", "alice")) {
		t.Fatal("header key not stable")
	}
	c := mk(Key{Kind: KeyCookie, Name: "sid"})
	a := c.Select(nil, hdr("Cookie", "a=1; sid=xyz; b=2"))
	if c.Select(nil, hdr("cookie", `sid="xyz"`)) != a || c.Select(nil, hdr("Cookie", "sid=xyz")) != a {
		t.Fatal("cookie key not stable")
	}
	// Keyless requests go round robin instead of to one upstream.
	seen = map[serval.UpstreamIndex]bool{}
	for i := 0; i < 8; i++ {
		seen[h.Select(nil, &serval.Request{}).Index] = true
	}
	if len(seen) != 8 {
		t.Fatalf("keyless requests reached %d of 8 upstreams", len(seen))
	}
	// So do requests whose header or cookie is there but empty: they
	// carry no key, and hashing "" would send them all to one upstream.
	for _, tc := range []struct {
		s   *Hash
		req *serval.Request
	}{{h, hdr("X-User", "")}, {c, hdr("Cookie", "sid=")}, {c, hdr("Cookie", `sid=""; a=1`)}} {
		seen = map[serval.UpstreamIndex]bool{}
		for i := 0; i < 8; i++ {
			seen[tc.s.Select(nil, tc.req).Index] = true
		}
		if len(seen) != 8 {
			t.Fatalf("requests with an empty key (%s) reached %d of 8 upstreams", tc.req.Fields[0].Value, len(seen))
		}
	}
	if _, err := NewHash(tab, nil, Key{Kind: KeyHeader, Name: "bad name"}); err != ErrKeyName {
		t.Fatalf("bad header name: %v", err)
	}
	if _, err := NewHash(tab, nil, Key{}); err != ErrKeyKind {
		t.Fatalf("zero key: %v", err)
	}
}

func TestFindCookie(t *testing.T) {
	for _, tc := range []struct {
		field, name, want string
		ok                bool
	}{
		{"a=1; b=2", "b", "2", true},
		{"a=1;b=2", "b", "2", true},
		{"ab=1; b=2", "b", "2", true},
		{"a=1", "b", "", false},
		{"b", "b", "", false},
		{"B=1", "b", "", false},
		{`b="q"`, "b", "q", true},
		{"b=", "b", "", true},
		{";;; b=3 ;", "b", "3", true},
	} {
		v, ok := findCookie([]byte(tc.field), tc.name)
		if ok != tc.ok || string(v) != tc.want {
			t.Errorf("findCookie(%q, %q) = %q, %v; want %q, %v", tc.field, tc.name, v, ok, tc.want, tc.ok)
		}
	}
}
