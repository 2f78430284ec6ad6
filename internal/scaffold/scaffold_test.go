package scaffold

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/runtimes"
)

// copyExamples copies the repository's examples into a temporary directory.
func copyExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../../examples/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dir
}

// lines returns the file's lines.
func lines(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(data), "\n")
}

// Adding a function to a hand-written file keeps every line of it, in
// order (comments and blank lines too), and the result loads with the new
// function last, wired to its trigger.
func TestNewKeepsTheFile(t *testing.T) {
	for _, trigger := range Triggers {
		t.Run(trigger, func(t *testing.T) {
			dir := copyExamples(t)
			cfg := filepath.Join(dir, "polyfn.yaml")
			before := lines(t, cfg)
			if _, err := New(context.Background(), Options{Config: cfg, Name: "added", Runtime: "python3", Trigger: trigger}); err != nil {
				t.Fatal(err)
			}
			after := lines(t, cfg)
			i := 0
			for _, l := range after {
				if i < len(before) && l == before[i] {
					i++
				}
			}
			if i != len(before) {
				t.Fatalf("line %d of the original (%q) is missing or moved:\n%s", i+1, before[i], strings.Join(after, "\n"))
			}
			c, err := config.Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			f := c.Functions[len(c.Functions)-1]
			if f.Name != "added" || f.Handler != "main.handler" || f.Codedir != filepath.Join(dir, "functions", "added") {
				t.Fatalf("last function %+v", f)
			}
			if got := len(f.Triggers.MQTT) > 0; got != (trigger == "mqtt") {
				t.Errorf("mqtt trigger: %v", got)
			}
			if got := len(f.Triggers.Timer) > 0; got != (trigger == "timer") {
				t.Errorf("timer trigger: %v", got)
			}
		})
	}
}

// init's file takes functions one after the other, and keeps its comments.
func TestInitThenNew(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir); err == nil {
		t.Fatal("a second init overwrote polyfn.yaml")
	}
	for _, rt := range []string{"python3", "node"} {
		if _, err := New(context.Background(), Options{Config: cfg, Name: "f-" + rt, Runtime: rt}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Functions) != 2 || c.Functions[0].Name != "f-python3" || c.Functions[1].Handler != "index.handler" {
		t.Fatalf("functions %+v", c.Functions)
	}
	data, _ := os.ReadFile(cfg)
	for _, want := range []string{"# polyfn configuration", "# state_dir: ./state", "# curl -d '{\"name\":\"polyfn\"}' 127.0.0.1:8080/function/f-node"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("polyfn.yaml lacks %q:\n%s", want, data)
		}
	}
}

// A name in use, a directory with files, an unknown runtime or trigger:
// refused, and nothing written.
func TestNewRefuses(t *testing.T) {
	dir := copyExamples(t)
	cfg := filepath.Join(dir, "polyfn.yaml")
	orig, _ := os.ReadFile(cfg)
	for name, o := range map[string]Options{
		"name in use":  {Name: "sayhi", Runtime: "python3"},
		"codedir full": {Name: "other", Runtime: "python3", Codedir: "functions/echo"},
		"runtime":      {Name: "x", Runtime: "ruby"},
		"trigger":      {Name: "x", Runtime: "node", Trigger: "kafka"},
		"invalid name": {Name: "../x", Runtime: "node"},
		"no such file": {Config: filepath.Join(dir, "missing.yaml"), Name: "x", Runtime: "node"},
	} {
		if o.Config == "" {
			o.Config = cfg
		}
		if _, err := New(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if data, _ := os.ReadFile(cfg); string(data) != string(orig) {
		t.Errorf("polyfn.yaml changed:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "functions", "x")); !os.IsNotExist(err) {
		t.Errorf("a codedir was written (%v)", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "functions", "echo"))
	if len(ents) != 1 {
		t.Errorf("functions/echo now holds %d files", len(ents))
	}
}

// warmSDK puts the Go SDK's third-party dependencies in the module cache
// (through the environment's module proxy: on a fresh machine they are not
// there), so that the tests can switch the proxy off to prove nothing of
// polyfn's own is fetched.
var warmSDK = sync.OnceValues(func() ([]byte, error) {
	cmd := exec.Command(runtimes.GoTool(), "mod", "download")
	cmd.Dir = "../../sdk/go"
	return cmd.CombinedOutput()
})

func warmSDKDeps(t *testing.T) {
	t.Helper()
	if out, err := warmSDK(); err != nil {
		t.Fatalf("go mod download in sdk/go: %v\n%s", err, out)
	}
}

// Every template, with every trigger, writes a test that passes in the
// language's own framework (pytest, node --test, go test): run here with
// the checkout's Go SDK and .venv (which has pytest).
func TestGeneratedTestsPass(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	warmSDKDeps(t)
	locate = func() runtimes.Home { return runtimes.At(root) }
	t.Cleanup(func() { locate = runtimes.Locate })
	py := filepath.Join(root, ".venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		t.Skip("no .venv: make runtimes")
	}
	dir := t.TempDir()
	cfg, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	run := map[string][]string{
		"python3": {py, "-m", "pytest", "-q", "-p", "no:cacheprovider"},
		"node":    {"node", "--test"},
		"go":      {runtimes.GoTool(), "test", "."},
	}
	for _, rt := range []string{"python3", "node", "go"} {
		for _, trigger := range Triggers {
			name := strings.TrimSuffix(rt, "3") + "-" + trigger
			res, err := New(context.Background(), Options{Config: cfg, Name: name, Runtime: rt, Trigger: trigger})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			cmd := exec.Command(run[rt][0], run[rt][1:]...)
			cmd.Dir = res.Codedir
			cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: %s: %v\n%s", name, strings.Join(run[rt], " "), err, out)
			}
		}
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Functions) != 9 {
		t.Fatalf("%d functions in polyfn.yaml, want 9", len(c.Functions))
	}
}
