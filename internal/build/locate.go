package build

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/polyfn/polyfn/internal/config"
)

// The one place that says where the tools a build needs are found: from
// the runtime's command, as internal/runtimes made it for the built-in
// runtimes (or a config names it), the way the host starts workers.

// PythonInterpreter returns the interpreter that runs rt's workers: the
// first word of its command, looked up on PATH.
func PythonInterpreter(rt config.Runtime) (string, error) {
	if len(rt.Command) == 0 {
		return "", errors.New("the runtime has no command")
	}
	p, err := exec.LookPath(rt.Command[0])
	if err != nil {
		return "", fmt.Errorf("python interpreter: %w", err)
	}
	return filepath.Abs(p)
}

// NodeRuntimeLoader returns the loader module of polyfn's Node.js runtime
// that runs rt's workers, from the runtime's script in its command: the
// command itself (polyfn-node on PATH, a link to
// runtimes/node/bin/polyfn-node.js) or an argument of node's
// (node DIR/bin/polyfn-node.js, as internal/runtimes starts it).
func NodeRuntimeLoader(rt config.Runtime) (string, error) {
	if len(rt.Command) == 0 {
		return "", errors.New("the runtime has no command")
	}
	script := rt.Command[0]
	for _, w := range rt.Command {
		if b := filepath.Base(w); b == "polyfn-node" || b == "polyfn-node.js" {
			script = w
			break
		}
	}
	p, err := exec.LookPath(script)
	if err != nil {
		return "", fmt.Errorf("node runtime: %w", err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return "", fmt.Errorf("node runtime: %w", err)
	}
	loader := filepath.Join(filepath.Dir(filepath.Dir(p)), "lib", "loader.js")
	if _, err := os.Stat(loader); err != nil {
		return "", fmt.Errorf("node runtime: %w", err)
	}
	return loader, nil
}

// tool looks name up on PATH.
func tool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is needed to build this function: %w", name, err)
	}
	return p, nil
}

// uvFor returns the uv beside the interpreter (a virtual environment's
// bin/uv) or on PATH, or "" — then pip installs. POLYFN_PYTHON_INSTALLER=pip
// forces pip.
func uvFor(interp string) string {
	if os.Getenv("POLYFN_PYTHON_INSTALLER") == "pip" {
		return ""
	}
	if p := filepath.Join(filepath.Dir(interp), "uv"); isExec(p) {
		return p
	}
	if p, err := exec.LookPath("uv"); err == nil {
		return p
	}
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
