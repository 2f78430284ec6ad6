package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
)

// Problem is what loading a function without serving it found wrong.
type Problem struct {
	Function string `json:"function"`
	// Where is file:line (or the file) of the problem, when known.
	Where   string `json:"where,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Where != "" {
		return fmt.Sprintf("function %s: %s: %s", p.Function, p.Where, p.Message)
	}
	return fmt.Sprintf("function %s: %s", p.Function, p.Message)
}

// pythonCheck imports each function's handler module with polyfn's own
// loader, in the function's environment, and prints one JSON object per
// function: {} or {where, message}.
const pythonCheck = `
import json, sys, traceback
from polyfn_runtime.config import FunctionConfig
from polyfn_runtime.loader import HandlerLoader, HandlerLoadError
f = json.loads(sys.argv[1])
out = {}
try:
    HandlerLoader().load(FunctionConfig(name=f["name"], handler=f["handler"], codedir=f["codedir"], dependencies=f["dependencies"]))
except HandlerLoadError as err:
    out["message"] = str(err)
    cause = err.__cause__
    if isinstance(cause, SyntaxError) and cause.filename:
        out["where"] = "%s:%s" % (cause.filename, cause.lineno)
    elif cause is not None and cause.__traceback__ is not None:
        frames = [fr for fr in traceback.extract_tb(cause.__traceback__) if fr.filename.startswith(f["codedir"])]
        if frames:
            out["where"] = "%s:%s" % (frames[-1].filename, frames[-1].lineno)
    elif cause is None:
        try:
            from pathlib import Path
            from polyfn_runtime.loader import _module_file
            out["where"] = str(_module_file(Path(f["codedir"]), f["handler"].rpartition(".")[0]))
        except Exception:
            pass
except BaseException as err:
    out["message"] = "%s: %s" % (type(err).__name__, err)
print(json.dumps(out))
`

// nodeCheck loads the handler with polyfn's Node.js loader.
const nodeCheck = `
const [loaderPath, spec] = process.argv.slice(1);
const f = JSON.parse(spec);
require(loaderPath).loadHandler(f).then(
  () => { console.log('{}'); process.exit(0); },
  (err) => {
    const out = { message: err.message };
    const stack = String((err.cause && err.cause.stack) || '');
    const m = /^(?:file:\/\/)?(\/[^\n:]+):(\d+)/.exec(stack) || /\((?:file:\/\/)?(\/[^\n:)]+):(\d+):\d+\)/.exec(stack);
    if (m) out.where = m[1] + ':' + m[2];
    else { const f2 = /\((\/[^)]+)\) has no export/.exec(err.message); if (f2) out.where = f2[1]; }
    console.log(JSON.stringify(out));
    process.exit(0);
  });
`

// Check loads each function of cfg that a built-in runtime serves, the way
// its worker would, without serving it: imports a Python handler's module
// in its built environment and checks the attribute, loads a Node.js
// module and its export, and reports a Go function's compile errors (from
// its build result). results are the builds of cfg's functions, by name.
// The loading runs as builds do (builduser.For): on a host running as
// root, as a user of its own.
// Checks run at most parallel at once.
func Check(ctx context.Context, cfg *config.Config, results map[string]Result, parallel int) []Problem {
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	var (
		mu       sync.Mutex
		problems []Problem
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	// A handler's module-level code runs: as the user builds run as.
	runner := builduser.For(cfg)
	add := func(p Problem) {
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	}
	for _, fc := range cfg.Functions {
		rt := cfg.Effective(fc)
		if rt.Discovery == config.DiscoveryApp {
			continue
		}
		r, built := results[fc.Name]
		if built && r.Err != nil {
			// The error names the function; the problem's line does already.
			p := Problem{Function: fc.Name, Message: strings.TrimPrefix(r.Err.Error(), "function "+fc.Name+": ")}
			var be *Error
			if errors.As(r.Err, &be) && r.Kind == KindGo {
				p.Message = "does not compile:\n" + be.Output
			}
			add(p)
			continue
		}
		if !rt.BuiltIn || rt.Name != "python3" && rt.Name != "node" {
			continue
		}
		fc.Dependencies = r.Path
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if p, bad := checkOne(ctx, runner, rt, fc); bad {
				add(p)
			}
		}()
	}
	wg.Wait()
	return problems
}

func checkOne(ctx context.Context, runner *builduser.Runner, rt config.Runtime, fc config.Function) (Problem, bool) {
	spec, _ := json.Marshal(map[string]string{"name": fc.Name, "handler": fc.Handler, "codedir": fc.Codedir, "dependencies": fc.Dependencies})
	s, err := runner.Begin()
	if err != nil {
		return Problem{Function: fc.Name, Message: err.Error()}, true
	}
	defer s.Close()
	if err := s.Readable("codedir "+fc.Codedir, fc.Codedir); err != nil {
		return Problem{Function: fc.Name, Message: err.Error()}, true
	}
	var cmd *exec.Cmd
	if rt.Name == "python3" {
		interp, err := PythonInterpreter(rt)
		if err != nil {
			return Problem{Function: fc.Name, Message: err.Error()}, true
		}
		cmd = s.Command(ctx, fc.Codedir, nil, interp, "-c", pythonCheck, string(spec))
	} else {
		loader, err := NodeRuntimeLoader(rt)
		if err != nil {
			return Problem{Function: fc.Name, Message: err.Error()}, true
		}
		node, err := tool("node")
		if err != nil {
			return Problem{Function: fc.Name, Message: err.Error()}, true
		}
		cmd = s.Command(ctx, fc.Codedir, nil, node, "-e", nodeCheck, loader, string(spec))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var out Problem
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &out); jerr != nil || err != nil {
		return Problem{Function: fc.Name, Message: fmt.Sprintf("loading the handler failed: %v\n%s", err, tail(stderr.String()))}, true
	}
	out.Function = fc.Name
	return out, out.Message != ""
}
