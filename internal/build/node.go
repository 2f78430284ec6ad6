package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// A Node.js function's packages are installed from a copy of its
// package.json (and package-lock.json or npm-shrinkwrap.json: then `npm
// ci`, else `npm install`) into node/KEY/node_modules, and the codedir gets
// a node_modules symbolic link to it: Node.js then resolves the function's
// packages, from CommonJS and ES modules alike, the way it always does,
// with no cost at load time. KEY hashes the node version and ABI and those
// files, so functions with the same ones share an entry. A codedir holding
// a node_modules directory of its own (not a link) is left alone: the
// function uses it as it is and nothing is built.

// lockfiles are the files npm ci installs from.
var lockfiles = []string{"package-lock.json", "npm-shrinkwrap.json"}

// nodeNeeds reports whether codedir's package.json declares dependencies
// that polyfn installs.
func nodeNeeds(codedir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(codedir, "package.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var pkg struct {
		Dependencies         map[string]any `json:"dependencies"`
		OptionalDependencies map[string]any `json:"optionalDependencies"`
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		return false, fmt.Errorf("package.json is not valid JSON: %w", err)
	}
	if len(pkg.Dependencies)+len(pkg.OptionalDependencies) == 0 {
		return false, nil
	}
	if st, err := os.Lstat(filepath.Join(codedir, "node_modules")); err == nil && st.IsDir() {
		return false, nil // the function's own
	}
	return true, nil
}

var nodeVersions = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// nodeVersion returns node's version, architecture and module ABI,
// remembered in memory and on disk under the node binary's identity, so
// that an unchanged function costs no node start.
func (b *Builder) nodeVersion(ctx context.Context) (string, error) {
	node, err := tool("node")
	if err != nil {
		return "", err
	}
	id, err := identity(node)
	if err != nil {
		return "", err
	}
	nodeVersions.Lock()
	defer nodeVersions.Unlock()
	if v, ok := nodeVersions.m[id]; ok {
		return v, nil
	}
	memo := filepath.Join(b.o.Dir, "probe", "node-"+id)
	if data, err := os.ReadFile(memo); err == nil && len(data) > 0 {
		nodeVersions.m[id] = string(data)
		return string(data), nil
	}
	out, err := exec.CommandContext(ctx, node, "-p", "process.version+' '+process.arch+' '+process.versions.modules").Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", node, err)
	}
	v := strings.TrimSpace(string(out))
	nodeVersions.m[id] = v
	writeMemo(memo, []byte(v))
	return v, nil
}

func (b *Builder) node(ctx context.Context, sp Spec) (string, bool, error) {
	version, err := b.nodeVersion(ctx)
	if err != nil {
		return "", false, err
	}
	pkg, err := os.ReadFile(filepath.Join(sp.Codedir, "package.json"))
	if err != nil {
		return "", false, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "node v1\n%s\npackage.json %d\n%s\n", version, len(pkg), pkg)
	lock := ""
	for _, name := range lockfiles {
		if data, err := os.ReadFile(filepath.Join(sp.Codedir, name)); err == nil {
			fmt.Fprintf(h, "%s %d\n%s\n", name, len(data), data)
			lock = name
			break
		}
	}
	dir := filepath.Join(b.o.Dir, "node", hex.EncodeToString(h.Sum(nil))[:32])
	cached, err := b.entry(dir, func(tmp string) error {
		npm, err := tool("npm")
		if err != nil {
			return err
		}
		s, out, err := b.session(sp, tmp)
		if err != nil {
			return err
		}
		defer s.Close()
		files := []string{"package.json"}
		args := []string{npm, "install", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"}
		if lock != "" {
			files = append(files, lock)
			args[1] = "ci"
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(sp.Codedir, f))
			if err != nil {
				return err
			}
			if err := writeNew(filepath.Join(out, f), data); err != nil {
				return err
			}
		}
		if err := s.Own(out); err != nil {
			return err
		}
		b.starting(sp, shell(args)+" (package.json of "+sp.Codedir+")")
		b.ran()
		cmd := s.Command(ctx, out, nil, args[0], args[1:]...)
		var output bytes.Buffer
		cmd.Stdout, cmd.Stderr = &output, &output
		if err := cmd.Run(); err != nil {
			return &Error{Function: sp.Function, Command: shell(args), Output: tail(output.String()), Err: err}
		}
		if err := s.Take(out, tmp); err != nil {
			return err
		}
		return os.MkdirAll(filepath.Join(tmp, "node_modules"), 0o755)
	})
	if err != nil {
		return "", false, err
	}
	modules := filepath.Join(dir, "node_modules")
	if err := link(modules, filepath.Join(sp.Codedir, "node_modules")); err != nil {
		return "", false, &Error{Function: sp.Function, Command: "link " + filepath.Join(sp.Codedir, "node_modules"), Err: err}
	}
	return modules, cached, nil
}

// link makes at a symbolic link to target, replacing a link that points
// elsewhere (never a file or directory).
func link(target, at string) error {
	if cur, err := os.Readlink(at); err == nil && cur == target {
		return nil
	}
	if st, err := os.Lstat(at); err == nil && st.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a link", at)
	}
	tmp := at + ".polyfn-tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, at); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
