package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/cli"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// runCLI runs the polyfn command line in-process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = cli.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIInvoke(t *testing.T) {
	requirePython(t)
	th := hosttest.Start(t, testdata(t), pythonRuntimes["stream"]+pythonConfig)
	code, out, errOut := runCLI("invoke", "echo", "-d", `{"via": "cli"}`, "--url", th.URL)
	if code != 0 || out != "{\"via\": \"cli\"}\n" {
		t.Fatalf("invoke echo: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI("invoke", "ctx", "--url", th.URL)
	if code != 0 || !strings.Contains(out, `"trigger": "invoke"`) {
		t.Fatalf("invoke ctx: exit %d, stdout %q; want the context to say trigger invoke", code, out)
	}
	payload := filepath.Join(tempDir(t), "payload.json")
	if err := os.WriteFile(payload, []byte(`{"from": "file"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCLI("invoke", "echo", "-d", "@"+payload, "--url", th.URL); code != 0 || out != "{\"from\": \"file\"}\n" {
		t.Fatalf("invoke -d @FILE: exit %d, stdout %q", code, out)
	}
	code, out, errOut = runCLI("invoke", "fail", "-d", `{"why": "cli"}`, "--url", th.URL)
	if code == 0 || out != "" || !strings.Contains(errOut, "ValueError: bad input: cli") {
		t.Fatalf("invoke of a failing function: exit %d, stdout %q, stderr %q; want non-zero and the error", code, out, errOut)
	}
	if code, _, errOut := runCLI("invoke", "nope", "--url", th.URL); code == 0 || !strings.Contains(errOut, "FunctionNotFound") {
		t.Fatalf("invoke of an unknown function: exit %d, stderr %q", code, errOut)
	}
}

// TestCLIValidate: what TestGoldenValidate cannot hold, because it depends
// on the machine (the examples' runtimes, the user the tests run as).
func TestCLIValidate(t *testing.T) {
	dir := tempDir(t)
	if os.Geteuid() == 0 {
		// A runtime under a directory only root may enter: its workers,
		// running as users of their own, could not start it.
		private := filepath.Join(t.TempDir(), "private")
		if err := os.Mkdir(private, 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(private, "python3"), "#!/bin/sh\n")
		if err := os.Chmod(filepath.Join(private, "python3"), 0o755); err != nil {
			t.Fatal(err)
		}
		unreachable := filepath.Join(dir, "unreachable.yaml")
		writeFile(t, unreachable, fmt.Sprintf("runtimes:\n  py: {protocol: call, command: [%q]}\nfunctions:\n  - {name: a, runtime: py, handler: a.h, codedir: .}\n", filepath.Join(private, "python3")))
		code, _, errOut := runCLI("validate", "-c", unreachable)
		if code == 0 || !strings.Contains(errOut, "functions[0] (a): its workers run as users") || !strings.Contains(errOut, private+" is mode 0700") {
			t.Errorf("validate of a config whose runtime workers cannot reach: exit %d, %q", code, errOut)
		}
	}
	code, out, errOut := runCLI("validate", "-c", "../examples/polyfn.yaml")
	if code != 0 || !strings.Contains(out, "ok, 4 functions") {
		t.Fatalf("validate examples: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "polyfn ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

// TestServeExamples runs the real binary on the examples, as `make run`
// does (its embedded MQTT broker on a free port), calls sayhi over HTTP and
// over MQTT (polyfn invoke --topic, as the README shows), then stops it with
// SIGTERM.
func TestServeExamples(t *testing.T) {
	requirePython(t)
	s := serve(t, "../examples/polyfn.yaml")
	for fn, want := range map[string]string{
		"sayhi":      `"message": "Hello, polyfn!"`,
		"hello-node": `"message":"Hello, polyfn!"`,
		"hello-go":   `"message":"Hello, polyfn!"`,
	} {
		status, body, err := post(s.base, fn, `{"name":"polyfn"}`)
		if err != nil {
			t.Fatal(err)
		}
		if status != 200 || !strings.Contains(body, want) {
			t.Fatalf("%s: got %d %s", fn, status, body)
		}
	}
	// The client commands find the host as polyfn serve was told: the
	// config, with the same --listen and --mqtt-listen, or POLYFN_URL.
	broker := mqttBroker(t, s.logs)
	code, out, errOut := runCLI("invoke", "--topic", "sayhi/in", "-d", `{"name":"mqtt"}`, "-c", "../examples/polyfn.yaml", "--mqtt-listen", strings.TrimPrefix(broker, "tcp://"))
	if code != 0 || !strings.Contains(out, `"message": "Hello, mqtt!"`) || !strings.Contains(out, `"trigger": "mqtt"`) {
		t.Fatalf("invoke --topic sayhi/in -c --mqtt-listen: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI("invoke", "--topic", "sayhi/in", "-d", `{"name":"broker"}`, "-c", "../examples/polyfn.yaml", "--broker", broker)
	if code != 0 || !strings.Contains(out, `"message": "Hello, broker!"`) {
		t.Fatalf("invoke --topic sayhi/in -c --broker: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv(cli.URLEnv, "http://127.0.0.1:1") // flags come first: nothing listens there
	code, out, errOut = runCLI("status", "-c", "../examples/polyfn.yaml", "--listen", strings.TrimPrefix(s.base, "http://"))
	if code != 0 || !strings.Contains(out, "sayhi") || !strings.Contains(out, "hello-go") {
		t.Fatalf("status -c --listen: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv(cli.URLEnv, s.base)
	code, out, errOut = runCLI("invoke", "sayhi", "-d", `{"name":"env"}`)
	if code != 0 || !strings.Contains(out, `"message": "Hello, env!"`) {
		t.Fatalf("invoke sayhi with %s: exit %d, stdout %q, stderr %q", cli.URLEnv, code, out, errOut)
	}
	if code, out, errOut = runCLI("status"); code != 0 || !strings.Contains(out, "sayhi") {
		t.Fatalf("status with %s: exit %d, stdout %q, stderr %q", cli.URLEnv, code, out, errOut)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("polyfn exited with %v after SIGTERM, want 0", s.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("polyfn did not exit within 20s of SIGTERM")
	}
	// The workers were in polyfn's children; none may survive it.
	if out, _ := exec.Command("pgrep", "-f", "--functions-worker-id").Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("workers left after polyfn exited: %s", out)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
