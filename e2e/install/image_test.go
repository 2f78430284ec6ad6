package install

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/runtimes"
	"github.com/polyfn/polyfn/internal/testfs"
)

// The Dockerfile's commands, as this test runs them. A change to one of
// them in the Dockerfile fails the test until it runs the new one.
var dockerfileSteps = []string{
	"RUN make install PREFIX=/opt/polyfn TAGS=kubernetes",
	"FROM scratch AS app\nCOPY examples/ /\n",
	"COPY --from=app --chown=10001:10001 / /app",
	"ENV HOME=/tmp XDG_CACHE_HOME=/var/cache/polyfn",
	"USER 10001:10001",
	"RUN polyfn kube -c /app/polyfn.yaml --pod-config --without-secrets > /etc/polyfn/polyfn.yaml \\\n && polyfn build -c /etc/polyfn/polyfn.yaml --without-secrets \\",
	"USER root\nRUN chown -R root:root /app /opt/polyfn/build /etc/polyfn \\\n && chmod -R a-w /app /opt/polyfn/build /etc/polyfn/polyfn.yaml\nUSER 10001:10001\n",
	`ENTRYPOINT ["polyfn"]`,
	`CMD ["serve", "-c", "/etc/polyfn/polyfn.yaml"]`,
}

// healthcheckRE finds the script the HEALTHCHECK runs with node.
var healthcheckRE = regexp.MustCompile(`(?m)^  CMD \["node", "-e", "(.*)"\]$`)

// testImage runs the final stage of the Dockerfile against the installed
// prefix, in a temporary root standing for the image's file system: the
// examples (and two functions with dependencies) copied to ROOT/app, the
// config rendered for the pod, the functions' dependencies built into the
// build cache, which is then made read-only; then the host serves from
// there as the container would. The functions answer, readiness and the
// HEALTHCHECK's request succeed on the admin listener, no installer runs,
// and serving wrote nothing to the build cache or the code.
func testImage(t *testing.T, repo, prefix string) {
	df, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range dockerfileSteps {
		if !strings.Contains(string(df), step) {
			t.Errorf("the Dockerfile no longer has the step this test runs:\n%s", step)
		}
	}
	hc := healthcheckRE.FindSubmatch(df)
	if hc == nil {
		t.Fatal("no HEALTHCHECK CMD [\"node\", \"-e\", ...] in the Dockerfile")
	}

	// The image's paths, under root.
	root := tempDir(t)
	img := func(p string) string { return filepath.Join(root, p) }
	for _, d := range []string{"/etc/polyfn/secrets", "/opt/polyfn/build", "/var/lib/polyfn", "/var/cache/polyfn", "/tmp"} {
		if err := os.MkdirAll(img(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// COPY --from=app / /app, the app stage holding examples/, to which a
	// Python and a Node.js function with a dependency each are added: their
	// builds are what the host could otherwise write at start (the package
	// environment, the codedir's node_modules link, the memos). The Python
	// one reads a file, an env_from source and a variable the image build
	// does not have (the files are not in /app).
	run(t, repo, os.Environ(), "cp", "-R", filepath.Join(repo, "examples"), img("/app"))
	yml, err := os.ReadFile(img("/app/polyfn.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The examples' functions list is the file's last section.
	write(t, img("/app/polyfn.yaml"), string(yml)+`
  - name: deps-python
    auth: anonymous
    runtime: python3
    handler: main.handler
    codedir: ./functions/deps-python
    env:
      TOKEN: ${file:secrets/token}
      WHO: ${POLYFN_IMAGE_TEST_WHO}
    env_from: [secrets/db.env]

  - name: deps-node
    auth: anonymous
    runtime: node
    handler: index.handler
    codedir: ./functions/deps-node
`)
	for _, d := range []string{"deps-python", "deps-node"} {
		if err := os.Mkdir(img("/app/functions/"+d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, img("/app/functions/deps-python/requirements.txt"), "six\n")
	write(t, img("/app/functions/deps-python/main.py"), `import os

import six


def handler(event, context):
    env = {k: os.environ.get(k) for k in ("TOKEN", "DB_USER", "WHO")}
    return {"six": six.__version__, "name": event["name"], "env": env}
`)
	write(t, img("/app/functions/deps-node/package.json"), `{"name": "deps-node", "version": "1.0.0", "dependencies": {"ms": "2.1.3"}}`)
	write(t, img("/app/functions/deps-node/index.js"), `'use strict';
const ms = require('ms');

exports.handler = async (event) => ({ twoDays: ms('2 days'), name: event.name });
`)
	// ENV: PATH, HOME, XDG_CACHE_HOME as the Dockerfile sets them. The Go
	// module and build caches are the test environment's, so that the
	// example's dependencies are not fetched and compiled again.
	gomod := strings.TrimSpace(run(t, repo, os.Environ(), runtimes.GoTool(), "env", "GOMODCACHE"))
	gocache := strings.TrimSpace(run(t, repo, os.Environ(), runtimes.GoTool(), "env", "GOCACHE"))
	env := append(systemEnv(goProxy()...),
		"PATH="+filepath.Join(prefix, "bin")+":/usr/local/go/bin:/usr/bin:/bin",
		"HOME="+img("/tmp"), "XDG_CACHE_HOME="+img("/var/cache/polyfn"),
		"GOMODCACHE="+gomod, "GOCACHE="+gocache)

	// RUN polyfn kube --pod-config > /etc/polyfn/polyfn.yaml; its
	// absolute paths are the image's, mapped under root here, and the
	// external broker of the MQTT rule is a loopback port nothing listens
	// on (the host retries it; nothing else is reached).
	pod := run(t, img("/app"), env, "polyfn", "kube", "-c", img("/app/polyfn.yaml"), "--pod-config", "--without-secrets")
	for _, want := range []string{"codedir: /app/functions/sayhi", "build:\n  dir: /opt/polyfn/build", "admin:\n  listen: 0.0.0.0:9180", "state_dir: /var/lib/polyfn", "broker: tcp://mqtt:1883"} {
		if !strings.Contains(pod, want) {
			t.Errorf("the pod's config lacks %q:\n%s", want, pod)
		}
	}
	pod = strings.NewReplacer(
		" /app/", " "+img("/app")+"/",
		" /opt/polyfn/build", " "+img("/opt/polyfn/build"),
		" /var/lib/polyfn", " "+img("/var/lib/polyfn"),
		"tcp://mqtt:1883", "tcp://"+hosttest.FreeAddr(t),
		"/etc/polyfn/secrets/", img("/etc/polyfn/secrets")+"/",
	).Replace(pod)
	cfg := img("/etc/polyfn/polyfn.yaml")
	write(t, cfg, pod)
	// && polyfn build -c /etc/polyfn/polyfn.yaml
	out := run(t, img("/app"), env, "polyfn", "build", "-c", cfg, "--without-secrets")
	for _, kind := range []string{"go", "python", "node"} {
		if ents, err := os.ReadDir(img("/opt/polyfn/build/" + kind)); err != nil || len(ents) == 0 {
			t.Errorf("no %s build in the build cache %s (%v):\n%s", kind, img("/opt/polyfn/build"), err, out)
		}
	}
	// USER root, RUN chown -R root:root ... && chmod -R a-w (the test runs
	// as one user, so the chown is left out); the pod's root file system
	// is read-only besides.
	run(t, root, env, "chmod", "-R", "a-w", img("/opt/polyfn/build"), img("/app"), cfg)
	t.Cleanup(func() { _ = exec.Command("chmod", "-R", "u+w", root).Run() })
	before := testfs.Snapshot(t, img("/opt/polyfn/build"), img("/app"))

	// ENTRYPOINT polyfn, CMD serve -c /etc/polyfn/polyfn.yaml; the
	// listeners on loopback ports instead of all addresses.
	listen, admin := hosttest.FreeAddr(t), hosttest.FreeAddr(t)
	// The values the image build did not read: the Secret mounted at
	// /etc/polyfn/secrets and the variable, as the pod has them.
	write(t, img("/etc/polyfn/secrets/file.secrets_token"), "t0ken\n")
	write(t, img("/etc/polyfn/secrets/env.secrets_db.env"), "DB_USER=alice\n")
	cmd := exec.Command("polyfn", "serve", "-c", cfg, "--listen", listen, "--admin-listen", admin)
	cmd.Dir = img("/app")
	logs := &hosttest.SyncBuffer{}
	cmd.Env, cmd.Stdout, cmd.Stderr = append(env, "POLYFN_IMAGE_TEST_WHO=bob"), logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("polyfn output:\n%s", logs.String())
		}
	}()
	hosttest.WaitFor(t, 60*time.Second, "readiness on the admin listener", func() bool {
		resp, err := http.Get("http://" + admin + "/healthz/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The HEALTHCHECK, as docker runs it.
	script := strings.ReplaceAll(string(hc[1]), "127.0.0.1:9180", admin)
	if out, err := exec.Command("node", "-e", script).CombinedOutput(); err != nil {
		t.Errorf("the HEALTHCHECK failed: %v\n%s", err, out)
	}
	base := "http://" + listen
	for _, c := range []struct{ fn, want string }{
		{"sayhi", "Hello, polyfn!"},
		{"hello-node", "Hello, polyfn!"},
		{"hello-go", "Hello, polyfn!"},
		{"deps-python", `"env": {"TOKEN": "t0ken", "DB_USER": "alice", "WHO": "bob"}`},
		{"deps-node", `{"twoDays":172800000,"name":"polyfn"}`},
	} {
		status, body, err := post(base, c.fn, `{"name":"polyfn"}`)
		if err != nil || status != 200 || !strings.Contains(body, c.want) {
			t.Errorf("%s: got %d %s (%v), want a body with %s", c.fn, status, body, err, c.want)
		}
	}
	if !strings.Contains(logs.String(), "installers_run=0") {
		t.Errorf("the host ran an installer on the image's fresh build cache:\n%s", logs.String())
	}
	if after := testfs.Snapshot(t, img("/opt/polyfn/build"), img("/app")); after != before {
		t.Errorf("serving wrote to the read-only build cache or code:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Once the HEALTHCHECK's host is gone, it fails.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("polyfn did not stop on SIGTERM")
	}
	if err := exec.Command("node", "-e", script).Run(); err == nil {
		t.Error("the HEALTHCHECK succeeded with the host stopped")
	}
}
