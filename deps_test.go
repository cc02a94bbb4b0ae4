package serval_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The layering of DESIGN.md §1, kept true by this test. A package may import
// the standard library, the non-std modules its layer allows, and module
// packages of a strictly lower layer. Programs (examples/..., cmd/...) may
// import anything.
const modulePath = "github.com/servalproxy/serval"

// layerOf maps a package (path relative to the module root, "" for the root)
// to its layer. Packages not listed are checked by the global rules only
// (nothing imports server, no foreign modules) and logged, so a new package
// is a reminder to place it here.
var layerOf = map[string]int{
	"": 0, // vocabulary

	"http1":   1, // protocol
	"tlsconn": 1,

	"internal": 1, // internal/sockio (raw socket I/O), internal/slab (off-heap buffers); for tests: testpki, leakcheck, syncbuf, testnet: std only

	"pool":      2, // infrastructure
	"client":    2,
	"health":    2,
	"prober":    2,
	"metrics":   2,
	"accesslog": 2,
	"logsink":   2,
	"tracing":   2,

	"proxy": 3, // mechanics

	"lb":      4, // strategy
	"router":  4,
	"gateway": 4,

	"server": 5, // orchestration
}

// strategy packages must not import mechanics (proxy) or orchestration
// (server), even if the layer numbers were changed.
var strategy = []string{"lb", "router", "gateway"}

// adapters may import vendor modules; the only places that do.
var adapters = []string{"otel", "promexport"}

// allowedModules are the non-std modules any layer >= 1 package may use
// (besides adapters and programs). The root and http1 stay std-only.
// golang.org/x/crypto: tlsconn's ChaCha20-Poly1305 (std exports no such
// AEAD; x/crypto is the implementation crypto/tls itself vendors).
var allowedModules = []string{"golang.org/x/sys", "golang.org/x/crypto"}

type goPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

func listPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH: layering not checked")
	}
	cmd := exec.Command(goBin, "list", "-e", "-deps", "-json", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]*goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(goPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	if len(pkgs) == 0 {
		t.Fatal("go list returned no packages")
	}
	return pkgs
}

// rel returns the module-relative path of a module package and true, or
// false for packages outside the module.
func rel(path string) (string, bool) {
	if path == modulePath {
		return "", true
	}
	if r, ok := strings.CutPrefix(path, modulePath+"/"); ok {
		return r, true
	}
	return "", false
}

func isProgram(r string) bool {
	return r == "examples" || r == "cmd" || strings.HasPrefix(r, "examples/") || strings.HasPrefix(r, "cmd/") ||
		r == "bench" || strings.HasPrefix(r, "bench/") || r == "scripts" || strings.HasPrefix(r, "scripts/")
}

// top is the first path element: "pool" for "pool/internal/x".
func top(r string) string {
	if i := strings.IndexByte(r, '/'); i >= 0 {
		return r[:i]
	}
	return r
}

func moduleOf(path string) string {
	for _, m := range allowedModules {
		if path == m || strings.HasPrefix(path, m+"/") {
			return m
		}
	}
	return ""
}

func TestLayering(t *testing.T) {
	pkgs := listPackages(t)
	checked := 0
	for _, p := range pkgs {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		if p.Error != nil {
			t.Logf("%s: go list error (checked as far as listed): %s", p.ImportPath, p.Error.Err)
		}
		checked++
		if isProgram(from) {
			continue
		}
		fromTop := top(from)
		fromLayer, placed := layerOf[fromTop]
		if !placed && !slices.Contains(adapters, fromTop) {
			t.Logf("%s: not in the layer table of deps_test.go; only global rules checked", p.ImportPath)
		}
		for _, imp := range p.Imports {
			checkImport(t, pkgs, p.ImportPath, from, fromLayer, placed, imp)
		}
	}
	if checked == 0 {
		t.Fatalf("no packages of module %s listed", modulePath)
	}
}

// reporter is the part of *testing.T checkImport uses, so the rules can be
// tested on made-up imports.
type reporter interface {
	Errorf(format string, args ...any)
}

type recorder struct {
	failed bool
	msg    string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
}

func checkImport(t reporter, pkgs map[string]*goPackage, path, from string, fromLayer int, placed bool, imp string) {
	fromTop := top(from)
	dep := pkgs[imp]
	if dep != nil && dep.Standard || dep == nil && !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
		return // standard library
	}
	to, inModule := rel(imp)
	if !inModule {
		if slices.Contains(adapters, fromTop) {
			return
		}
		if fromLayer == 0 || fromTop == "http1" {
			t.Errorf("%s imports %s: layer %d (%s) may import the standard library only", path, imp, fromLayer, fromTop)
			return
		}
		if moduleOf(imp) == "" {
			t.Errorf("%s imports %s: only adapters (%v) may import modules other than %v", path, imp, adapters, allowedModules)
		}
		return
	}
	toTop := top(to)
	if toTop == fromTop {
		return // within one package tree (e.g. pool/internal)
	}
	if toTop == "server" {
		t.Errorf("%s imports %s: only server, examples/... and cmd/... may import server", path, imp)
		return
	}
	if isProgram(to) {
		t.Errorf("%s imports %s: library code must not import programs", path, imp)
		return
	}
	if slices.Contains(strategy, fromTop) && toTop == "proxy" {
		t.Errorf("%s imports %s: strategy (lb, router, gateway) must not import mechanics (proxy)", path, imp)
		return
	}
	if !placed {
		return
	}
	toLayer, ok := layerOf[toTop]
	if !ok {
		if slices.Contains(adapters, toTop) {
			t.Errorf("%s imports adapter %s: only programs may import adapters", path, imp)
		}
		return
	}
	if toLayer >= fromLayer {
		t.Errorf("%s (layer %d) imports %s (layer %d): dependencies must point to lower layers", path, fromLayer, imp, toLayer)
	}
}

// TestLayeringRules checks the checker on a few hand-made cases, so a bug in
// it cannot silently pass everything.
func TestLayeringRules(t *testing.T) {
	std := &goPackage{ImportPath: "fmt", Standard: true}
	pkgs := map[string]*goPackage{"fmt": std}
	cases := []struct {
		from, imp string
		bad       bool
	}{
		{"", "fmt", false},
		{"", modulePath + "/http1", true},
		{"", "golang.org/x/sys/unix", true},
		{"http1", modulePath, false},
		{"http1", "golang.org/x/sys/unix", true},
		{"http1", modulePath + "/pool", true},
		{"pool", "golang.org/x/sys/unix", false},
		{"pool", modulePath + "/http1", false},
		{"pool", modulePath + "/client", true},
		{"pool", "github.com/some/module", true},
		{"proxy", modulePath + "/client", false},
		{"proxy", modulePath + "/lb", true},
		{"proxy", modulePath + "/server", true},
		{"lb", modulePath + "/proxy", true},
		{"lb", modulePath + "/health", false},
		{"lb", modulePath + "/server", true},
		{"server", modulePath + "/proxy", false},
		{"server", modulePath + "/lb", false},
		{"client", modulePath + "/pool", true},
		{"otel", "go.opentelemetry.io/otel", false},
		{"newpkg", modulePath + "/server", true},
		{"newpkg", "github.com/some/module", true},
	}
	for _, c := range cases {
		rec := &recorder{}
		fromLayer, placed := layerOf[top(c.from)]
		checkImport(rec, pkgs, "pkg("+c.from+")", c.from, fromLayer, placed, c.imp)
		if rec.failed != c.bad {
			t.Errorf("%q importing %q: flagged=%v, want %v (%s)", c.from, c.imp, rec.failed, c.bad, rec.msg)
		}
	}
}
