package runtimes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func touch(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f)
		mkdirs(t, filepath.Dir(p))
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLayouts(t *testing.T) {
	inst := t.TempDir()
	mkdirs(t, inst, "lib/polyfn")
	co := t.TempDir()
	touch(t, co, "go.mod")
	mkdirs(t, co, "runtimes/python", "sdk/go")
	for root, want := range map[string]string{inst: Installed, co: Checkout, t.TempDir(): PathOnly} {
		if got := At(root).Layout; got != want {
			t.Errorf("At(%s) = %s, want %s", root, got, want)
		}
	}
	if py := At(inst).Python(); py.Command[0] != filepath.Join(inst, "lib/polyfn/python/bin/python") {
		t.Errorf("installed python command %v", py.Command)
	}
	if node := At(co).Node(); node.Command[len(node.Command)-1] != filepath.Join(co, "runtimes/node/bin/polyfn-node.js") {
		t.Errorf("checkout node command %v", node.Command)
	}
}

// A runtime whose files are missing is reported with the command that
// would put them there, without starting anything.
func TestMissingRuntimeNamesTheFix(t *testing.T) {
	inst := t.TempDir()
	mkdirs(t, inst, "lib/polyfn")
	co := t.TempDir()
	touch(t, co, "go.mod")
	mkdirs(t, co, "runtimes/python", "sdk/go")
	for _, c := range []struct {
		r    Runtime
		want string
	}{
		{At(inst).Python(), "make install PREFIX=" + inst},
		{At(inst).Node(), "make install PREFIX=" + inst},
		{At(co).Python(), "make -C " + co + " runtimes"},
		{At(co).Node(), "make -C " + co + " runtimes"},
	} {
		_, err := Probe(context.Background(), c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (%s): got %v, want an error naming %q", c.r.Name, c.r.Layout, err, c.want)
		}
	}
}

// An interpreter without polyfn_runtime is found out by the probe.
func TestProbeFindsInterpreterWithoutRuntime(t *testing.T) {
	inst := t.TempDir()
	mkdirs(t, inst, "lib/polyfn/python/bin")
	if err := os.Symlink("/usr/bin/python3", filepath.Join(inst, "lib/polyfn/python/bin/python")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	r := At(inst).Python()
	if r.Err != nil {
		t.Fatalf("files present, yet: %v", r.Err)
	}
	_, err := Probe(context.Background(), r)
	if err == nil || !strings.Contains(err.Error(), "cannot import polyfn_runtime") || !strings.Contains(err.Error(), "make install PREFIX=") {
		t.Fatalf("got %v, want polyfn_runtime missing and the fix", err)
	}
}

// The repository's own layout probes: the runtimes make runtimes built.
func TestProbeCheckout(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	h := At(root)
	if h.Layout != Checkout {
		t.Fatalf("the repository's layout is %s", h.Layout)
	}
	for _, r := range []Runtime{h.Python(), h.Node()} {
		if r.Err != nil {
			t.Skipf("runtimes not built (make runtimes): %v", r.Err)
		}
		info, err := Probe(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version == "" || info.Version == "unknown" || info.Where == "" || info.Interpreter == "" {
			t.Errorf("%s: incomplete info %+v", r.Name, info)
		}
	}
	if sdk, api := h.GoSDK(); sdk != filepath.Join(root, "sdk/go") || api != filepath.Join(root, "api") {
		t.Errorf("GoSDK() = %s, %s", sdk, api)
	}
}

// polyfn-node.js run by path (checkout and installed layouts) gets the same
// V8 flags as its shebang line gives it when run as polyfn-node from PATH.
func TestNodeFlagsMatchTheShebang(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "runtimes", "node", "bin", "polyfn-node.js"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(script), "\n")
	want := "#!/usr/bin/env -S node " + strings.Join(NodeFlags, " ")
	if first != want {
		t.Errorf("polyfn-node.js starts with %q, want %q", first, want)
	}
	co := t.TempDir()
	touch(t, co, "go.mod")
	mkdirs(t, co, "runtimes/python", "sdk/go")
	node := At(co).Node()
	for _, cmd := range [][]string{node.Command, node.CallCommand} {
		if len(cmd) < 2+len(NodeFlags) || strings.Join(cmd[1:1+len(NodeFlags)], " ") != strings.Join(NodeFlags, " ") {
			t.Errorf("node command %v: want the flags %v after the interpreter", cmd, NodeFlags)
		}
	}
}
