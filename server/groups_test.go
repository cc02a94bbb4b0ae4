package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/lb"
)

// groupsHandler routes /api/ to one balancer and the rest to another:
// two upstream tables whose indexes both start at 0, behind one pool.
type groupsHandler struct{ api, web *lb.Handler }

func (g *groupsHandler) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	if bytes.HasPrefix(req.Path, []byte("/api/")) {
		return g.api.SelectUpstream(x, req)
	}
	return g.web.SelectUpstream(x, req)
}

// namedOrigin answers every request with its name.
func namedOrigin(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestGroupsShareNoConnections: a gateway with two groups (a table and an
// lb.Handler each, both tables starting at index 0) and one pool sends
// every request to its own group's backend, whatever connections the
// other group left idle under the same index.
func TestGroupsShareNoConnections(t *testing.T) {
	leakCheck(t)
	apiT, err := lb.ParseBackends(namedOrigin(t, "api-1") + "," + namedOrigin(t, "api-2"))
	if err != nil {
		t.Fatal(err)
	}
	webT, err := lb.ParseBackends(namedOrigin(t, "web-1"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := lb.New(lb.Config{Upstreams: apiT})
	if err != nil {
		t.Fatal(err)
	}
	web, err := lb.New(lb.Config{Upstreams: webT})
	if err != nil {
		t.Fatal(err)
	}
	_, ts := startWith(t, &groupsHandler{api: api, web: web}, testPool(t, 2), testConfig())
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: testTimeout}
	for i := range 40 {
		path, want := "/web/"+strconv.Itoa(i), "web-1"
		if i%2 == 0 {
			path, want = "/api/"+strconv.Itoa(i), "api-"
		}
		resp, err := cl.Get("http://" + ts.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), want) {
			t.Fatalf("GET %s answered by %q, want %s", path, b, want)
		}
	}
}
