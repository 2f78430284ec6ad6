package gobuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// sdkFunction is a Go function using the SDK that prints "built" when run
// with --probe instead of dialling a host.
const sdkFunction = `package main

import (
	"context"
	"fmt"
	"os"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--probe" {
		fmt.Print("built")
		return
	}
	polyfn.Start(func(context.Context, polyfn.Event) (any, error) { return "hi", nil })
}
`

// warmSDK puts the Go SDK's third-party dependencies in the module cache
// (through the environment's module proxy: on a fresh machine they are not
// there), so that the tests can switch the proxy off to prove nothing of
// polyfn's own is fetched.
var warmSDK = sync.OnceValues(func() ([]byte, error) {
	cmd := exec.Command("go", "mod", "download")
	cmd.Dir = "../../sdk/go"
	return cmd.CombinedOutput()
})

func warmSDKDeps(t *testing.T) {
	t.Helper()
	if out, err := warmSDK(); err != nil {
		t.Fatalf("go mod download in sdk/go: %v\n%s", err, out)
	}
}

// repoBuilder returns a builder carrying this repository's SDK.
func repoBuilder(t *testing.T) *Builder {
	t.Helper()
	warmSDKDeps(t)
	b := New(t.TempDir())
	sdk, err := filepath.Abs("../../sdk/go")
	if err != nil {
		t.Fatal(err)
	}
	b.SDK, b.API = sdk, filepath.Join(filepath.Dir(filepath.Dir(sdk)), "api")
	return b
}

// A function in a directory outside the repository, whose go.mod requires
// the SDK (which is published nowhere) and has no go.sum, builds with the
// module proxy switched off: the builder points the SDK at the copy it
// carries and supplies its sums; the function's files stay as they were.
func TestSDKFunctionOutsideTheRepositoryBuildsOffline(t *testing.T) {
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	for name, gomod := range map[string]string{
		"require": "module example.com/hello\n\ngo 1.24\n\nrequire github.com/polyfn/polyfn/sdk/go v0.0.0\n",
		// A replace pointing somewhere that no longer exists is overridden.
		"stale replace": "module example.com/hello\n\ngo 1.24\n\nrequire github.com/polyfn/polyfn/sdk/go v0.0.0\n\nreplace github.com/polyfn/polyfn/sdk/go => /nonexistent/sdk\n",
		// No require at all: -mod=mod adds it to the builder's copy.
		"no require": "module example.com/hello\n\ngo 1.24\n",
	} {
		t.Run(name, func(t *testing.T) {
			src := t.TempDir()
			for f, text := range map[string]string{"go.mod": gomod, "main.go": sdkFunction} {
				if err := os.WriteFile(filepath.Join(src, f), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			bin, err := repoBuilder(t).Build(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "--probe").Output(); err != nil || string(out) != "built" {
				t.Fatalf("built binary printed %q, %v", out, err)
			}
			if data, _ := os.ReadFile(filepath.Join(src, "go.mod")); string(data) != gomod {
				t.Fatalf("the function's go.mod was changed:\n%s", data)
			}
			if _, err := os.Stat(filepath.Join(src, "go.sum")); !os.IsNotExist(err) {
				t.Fatalf("a go.sum was written into the function's directory (%v)", err)
			}
		})
	}
}

// Without the SDK carried, the same function fails to build, and the
// error is the go command's: the test above proves the replace.
func TestSDKFunctionWithoutCarriedSDKFails(t *testing.T) {
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	src := t.TempDir()
	for f, text := range map[string]string{"go.mod": "module example.com/hello\n\ngo 1.24\n\nrequire github.com/polyfn/polyfn/sdk/go v0.0.0\n", "main.go": sdkFunction} {
		if err := os.WriteFile(filepath.Join(src, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := New(t.TempDir())
	b.SDK, b.API = "", ""
	_, err := b.Build(context.Background(), src)
	if err == nil || !strings.Contains(err.Error(), "github.com/polyfn/polyfn/sdk/go") {
		t.Fatalf("got %v, want a build error naming the SDK module", err)
	}
}

// A change to the carried SDK's source rebuilds the function.
func TestSDKChangeRebuilds(t *testing.T) {
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	src := t.TempDir()
	for f, text := range map[string]string{"go.mod": "module example.com/hello\n\ngo 1.24\n", "main.go": sdkFunction} {
		if err := os.WriteFile(filepath.Join(src, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := repoBuilder(t)
	// A copy of the SDK, to change.
	sdk := filepath.Join(t.TempDir(), "sdk")
	if out, err := exec.Command("cp", "-r", b.SDK, sdk).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	gomod, _ := os.ReadFile(filepath.Join(sdk, "go.mod"))
	gomod = []byte(strings.Replace(string(gomod), "=> ../../api", "=> "+b.API, 1))
	if err := os.WriteFile(filepath.Join(sdk, "go.mod"), gomod, 0o644); err != nil {
		t.Fatal(err)
	}
	b.SDK = sdk
	ctx := context.Background()
	bin1, err := b.Build(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sdk, "zz_extra.go"), []byte("package polyfn\n\nconst extra = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin2, err := b.Build(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if bin2 == bin1 {
		t.Fatal("a change to the SDK's source did not rebuild the function")
	}
}
