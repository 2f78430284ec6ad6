package gobuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/polyfn/polyfn/internal/runtimes"
)

// The modules polyfn carries the source of. They are not published: a
// function outside polyfn's repository gets them through replace
// directives the builder adds.
const (
	SDKModule  = "github.com/polyfn/polyfn/sdk/go"
	APIModule  = "github.com/polyfn/polyfn/api"
	hostModule = "github.com/polyfn/polyfn"
)

// locate fills in the go command and the SDK's directories from the
// layout polyfn runs in (internal/runtimes).
func (b *Builder) locate() {
	b.Go = runtimes.GoTool()
	b.SDK, b.API = runtimes.Locate().GoSDK()
}

// goTool is the go command the builder runs.
func (b *Builder) goTool() string {
	if b.Go != "" {
		return b.Go
	}
	return "go"
}

// sdkArgs returns the go command's flags that build codedir's module with
// the SDK polyfn carries: -modfile naming a copy of its go.mod with
// replace directives for the SDK and protocol modules (any replace of
// them the go.mod has is overridden: the SDK must match this host), whose
// go.sum holds the module's sums and the SDK's, and -mod=mod, so that a
// go.mod missing the SDK's requirements still builds. The function's own
// files are not changed. It returns nil for polyfn's own module, a
// directory outside any module, or when the builder carries no SDK. own
// is the key of codedir's files and go.mod; the copy is kept under it.
func (b *Builder) sdkArgs(ctx context.Context, codedir, own string) ([]string, error) {
	if b.SDK == "" || b.API == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(codedir)
	if err != nil {
		return nil, err
	}
	root := moduleRoot(abs)
	if root == "" {
		return nil, nil
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	if modulePath(gomod) == hostModule {
		return nil, nil
	}
	dir := filepath.Join(b.Dir, "mod", own)
	modfile := filepath.Join(dir, "go.mod")
	args := []string{"-modfile=" + modfile, "-mod=mod"}
	if _, err := os.Stat(modfile); err == nil {
		return args, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sums, err := mergeSums(filepath.Join(root, "go.sum"), filepath.Join(b.SDK, "go.sum"), filepath.Join(b.API, "go.sum"))
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), gomod, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "go.sum"), sums, 0o644); err != nil {
		return nil, err
	}
	edit := exec.CommandContext(ctx, b.goTool(), "mod", "edit",
		"-replace="+SDKModule+"="+b.SDK, "-replace="+APIModule+"="+b.API, filepath.Join(tmp, "go.mod"))
	if out, err := edit.CombinedOutput(); err != nil {
		return nil, &CompileError{Dir: codedir, Output: fmt.Sprintf("go mod edit: %v\n%s", err, out)}
	}
	// go.sum first: a go.mod in place is the sign both are.
	if err := os.Rename(filepath.Join(tmp, "go.sum"), filepath.Join(dir, "go.sum")); err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "go.mod"), modfile); err != nil {
		return nil, err
	}
	return args, nil
}

// modulePath returns the module path a go.mod declares.
func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// mergeSums returns the lines of the go.sum files, each once, sorted; a
// missing file adds nothing.
func mergeSums(files ...string) ([]byte, error) {
	seen := map[string]bool{}
	var lines []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" && !seen[l] {
				seen[l] = true
				lines = append(lines, l)
			}
		}
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return nil, nil
	}
	return []byte(strings.Join(lines, "\n") + "\n"), nil
}
