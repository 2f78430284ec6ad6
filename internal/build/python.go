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
	"regexp"
	"strings"
	"sync"
	"syscall"
)

// A Python function's environment is a package directory
// (python/KEY/site) installed with `pip install --target` (or uv's): the
// runtime adds it to sys.path after its own entries. Its requirements are
// resolved with the runtime's own packages (polyfn-runtime's dependencies
// as installed: grpcio, protobuf, PyYAML, …) as constraints, so the
// function gets exactly the versions it will import, and a pin that
// contradicts them fails the build with the resolver's message naming
// both. KEY hashes the interpreter's version and platform, those
// constraints, requirements.txt and pyproject.toml.

// probeScript prints what the key and the constraints need from an
// interpreter, as JSON.
const probeScript = `
import importlib.metadata as md, json, re, sys, sysconfig
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
todo = ["polyfn-runtime"]
try:
    md.distribution("polyfn-runtime")
except md.PackageNotFoundError:
    todo = ["grpcio", "protobuf", "PyYAML"]
seen = {}
while todo:
    name = todo.pop()
    if norm(name) in seen: continue
    try: d = md.distribution(name)
    except md.PackageNotFoundError: continue
    seen[norm(name)] = d.version
    for r in d.requires or []:
        if "extra ==" in r: continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r)
        if m: todo.append(m.group(1))
seen.pop("polyfn-runtime", None)
print(json.dumps({"version": sys.version, "platform": sysconfig.get_platform(),
    "constraints": sorted(k + "==" + v for k, v in seen.items()),
    "paths": [p for p in sys.path if p]}))
`

// pyprojectScript prints pyproject.toml's [project] dependencies, one a line.
const pyprojectScript = `
import sys
try:
    import tomllib
except ImportError:
    sys.exit("pyproject.toml dependencies need Python 3.11 or later (tomllib); list them in requirements.txt")
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f).get("project", {}).get("dependencies", [])))
`

type pyProbe struct {
	Version     string   `json:"version"`
	Platform    string   `json:"platform"`
	Constraints []string `json:"constraints"`
	Paths       []string `json:"paths"`
	// Stamps are the modification times of Paths when probed: a package
	// installed into or removed from the runtime's environment changes one.
	Stamps map[string]int64 `json:"stamps"`
}

var probes = struct {
	sync.Mutex
	m map[string]*pyProbe
}{m: map[string]*pyProbe{}}

// probePython returns what interp says about itself, remembered in memory
// and on disk (under the interpreter file's identity), so that an unchanged
// function costs no interpreter start.
func (b *Builder) probePython(ctx context.Context, interp string) (*pyProbe, error) {
	id, err := identity(interp)
	if err != nil {
		return nil, err
	}
	probes.Lock()
	p := probes.m[id]
	probes.Unlock()
	if p != nil && p.fresh() {
		return p, nil
	}
	memo := filepath.Join(b.o.Dir, "probe", id+".json")
	if data, err := os.ReadFile(memo); err == nil {
		p = &pyProbe{}
		if json.Unmarshal(data, p) == nil && p.fresh() {
			probes.Lock()
			probes.m[id] = p
			probes.Unlock()
			return p, nil
		}
	}
	out, err := exec.CommandContext(ctx, interp, "-c", probeScript).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", interp, err)
	}
	p = &pyProbe{}
	if err := json.Unmarshal(out, p); err != nil {
		return nil, fmt.Errorf("%s: %w", interp, err)
	}
	p.Stamps = map[string]int64{}
	for _, d := range p.Paths {
		if st, err := os.Stat(d); err == nil {
			p.Stamps[d] = st.ModTime().UnixNano()
		}
	}
	if data, err := json.Marshal(p); err == nil {
		writeMemo(memo, data)
	}
	probes.Lock()
	probes.m[id] = p
	probes.Unlock()
	return p, nil
}

// identity names an executable file as found at path: path, the file it
// resolves to and that file's size, modification time and inode.
func identity(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\n%s\n%d %d %d", path, real, st.Size(), st.ModTime().UnixNano(), ino))
	return hex.EncodeToString(sum[:16]), nil
}

// writeMemo writes a memo file whole (or not at all).
func writeMemo(path string, data []byte) {
	if os.MkdirAll(filepath.Dir(path), 0o755) != nil {
		return
	}
	tmp := path + ".tmp"
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, path)
	}
}

// fresh reports whether the directories on the interpreter's path are as
// they were when probed.
func (p *pyProbe) fresh() bool {
	for _, d := range p.Paths {
		st, err := os.Stat(d)
		old, had := p.Stamps[d]
		if (err == nil) != had || err == nil && st.ModTime().UnixNano() != old {
			return false
		}
	}
	return true
}

// localRef matches requirement lines that name local files, whose content
// the key cannot see: such a set is keyed by its codedir too.
var localRef = regexp.MustCompile(`(?m)^\s*(-r|-c|-e|--requirement|--constraint|--editable|\.|/|file:)|@\s*file:`)

func (b *Builder) python(ctx context.Context, sp Spec) (string, bool, error) {
	interp, err := PythonInterpreter(sp.Runtime)
	if err != nil {
		return "", false, err
	}
	probe, err := b.probePython(ctx, interp)
	if err != nil {
		return "", false, err
	}
	req, rerr := os.ReadFile(filepath.Join(sp.Codedir, "requirements.txt"))
	if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return "", false, rerr
	}
	pyproject, perr := os.ReadFile(filepath.Join(sp.Codedir, "pyproject.toml"))
	if perr != nil && !errors.Is(perr, fs.ErrNotExist) {
		return "", false, perr
	}
	h := sha256.New()
	fmt.Fprintf(h, "python v1\n%s\n%s\n%s\n", probe.Version, probe.Platform, strings.Join(probe.Constraints, "\n"))
	fmt.Fprintf(h, "requirements.txt %d\n%s\npyproject.toml %d\n%s\n", len(req), req, len(pyproject), pyproject)
	if localRef.Match(req) {
		abs, _ := filepath.Abs(sp.Codedir)
		fmt.Fprintf(h, "codedir %s\n", abs)
	}
	dir := filepath.Join(b.o.Dir, "python", hex.EncodeToString(h.Sum(nil))[:32])
	site := filepath.Join(dir, "site")
	cached, err := b.entry(dir, func(tmp string) error {
		s, out, err := b.session(sp, tmp)
		if err != nil {
			return err
		}
		defer s.Close()
		var reqs []string
		if rerr == nil {
			reqs = append(reqs, "-r", filepath.Join(sp.Codedir, "requirements.txt"))
		}
		if perr == nil {
			// Isolated (-I) and run from a directory of its own: neither the
			// codedir nor the working directory is on sys.path, so a module
			// of the function's (a tomllib.py) cannot stand in for the
			// standard library's and run at build time.
			cmd := s.Command(ctx, scratchDir(s), nil, interp, "-I", "-c", pyprojectScript, filepath.Join(sp.Codedir, "pyproject.toml"))
			said, err := cmd.CombinedOutput()
			if err != nil {
				return &Error{Function: sp.Function, Command: "read pyproject.toml dependencies", Output: tail(string(said)), Err: err}
			}
			if deps := strings.TrimSpace(string(said)); deps != "" {
				f := filepath.Join(out, "pyproject-requirements.txt")
				if err := writeNew(f, []byte(deps+"\n")); err != nil {
					return err
				}
				reqs = append(reqs, "-r", f)
			}
		}
		if len(reqs) == 0 || (rerr == nil && len(reqs) == 2 && len(bytes.TrimSpace(stripComments(req))) == 0) {
			if err := s.Take(out, tmp); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(tmp, "site"), 0o755) // nothing to install
		}
		constraints := filepath.Join(out, "runtime-constraints.txt")
		if err := writeNew(constraints, []byte(strings.Join(probe.Constraints, "\n")+"\n")); err != nil {
			return err
		}
		if err := s.Own(out); err != nil {
			return err
		}
		var args []string
		if uv := uvFor(interp); uv != "" {
			args = []string{uv, "pip", "install", "--no-progress", "--compile-bytecode", "--python", interp, "--target", filepath.Join(out, "site")}
		} else {
			args = []string{interp, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-warn-script-location", "--target", filepath.Join(out, "site")}
		}
		args = append(append(args, reqs...), "-c", constraints)
		b.starting(sp, shell(args))
		b.ran()
		cmd := s.Command(ctx, sp.Codedir, nil, args[0], args[1:]...)
		var output bytes.Buffer
		cmd.Stdout, cmd.Stderr = &output, &output
		if err := cmd.Run(); err != nil {
			e := &Error{Function: sp.Function, Command: shell(args), Output: tail(output.String()), Err: err}
			if c := conflicts(string(req)+"\n"+string(pyproject), probe.Constraints); c != "" {
				e.Err = fmt.Errorf("%w; the requirements name packages the Python runtime itself uses (%s): a function gets the runtime's versions of these, pin them compatibly or not at all", err, c)
			}
			return e
		}
		return s.Take(out, tmp)
	})
	if err != nil {
		return "", false, err
	}
	if ents, _ := os.ReadDir(site); len(ents) == 0 {
		return "", cached, nil
	}
	return site, cached, nil
}

// stripComments drops comment lines.
func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(append(out, t...), '\n')
		}
	}
	return out
}

// conflicts names the runtime's constraints whose package the
// requirements text mentions.
func conflicts(text string, constraints []string) string {
	norm := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(text))
	var hit []string
	for _, c := range constraints {
		name := strings.SplitN(c, "==", 2)[0]
		if regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s*([=<>!~;\[@,]|$)`).MatchString(norm) {
			hit = append(hit, c)
		}
	}
	return strings.Join(hit, ", ")
}
