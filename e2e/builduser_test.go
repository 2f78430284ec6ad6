package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/testfs"
)

// On a host running as root, an npm package's install script runs as a
// user of its own, not as root: the function that uses the package serves
// the uid the script recorded (not 0), and that uid cannot write into the
// cache entry it built.
func TestInstallScriptsRunAsUserOfTheirOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("builds run as users of their own only on a host running as root (switching users needs root); this host runs as uid " + strconv.Itoa(os.Geteuid()))
	}
	dir := tempDir(t)
	state := filepath.Join(dir, "state")
	tgz := filepath.Join(dir, "recorder-1.0.0.tgz")
	testfs.WriteTarball(t, tgz, map[string]string{
		"package/package.json": `{"name": "recorder", "version": "1.0.0", "main": "index.js", "scripts": {"install": "id -u > uid.txt"}}`,
		"package/index.js":     "module.exports = require('fs').readFileSync(__dirname + '/uid.txt', 'utf8').trim();\n",
	})
	writeFileAll(t, filepath.Join(dir, "fn", "package.json"), `{"name": "fn", "version": "1.0.0", "dependencies": {"recorder": "file:`+tgz+`"}}`)
	writeFileAll(t, filepath.Join(dir, "fn", "index.js"), "const uid = require('recorder');\nexports.handler = async () => ({ installed_as: uid, runs_as: String(process.getuid()) });\n")
	hosttest.Reachable(t, dir)
	th := hosttest.Start(t, dir, "state_dir: "+state+"\nfunctions:\n  - {name: fn, runtime: node, handler: index.handler, codedir: "+filepath.Join(dir, "fn")+"}\n")
	r := th.Call(t, "fn", "")
	var got struct {
		InstalledAs string `json:"installed_as"`
		RunsAs      string `json:"runs_as"`
	}
	if r.Status != 200 || json.Unmarshal(r.Body, &got) != nil {
		t.Fatalf("got %d %s %+v", r.Status, r.Body, r.Err)
	}
	uid, err := strconv.Atoi(got.InstalledAs)
	if err != nil || uid == 0 {
		t.Fatalf("the install script ran as uid %q; want a user of its own", got.InstalledAs)
	}
	modules, err := os.Readlink(filepath.Join(dir, "fn", "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", "echo x >> "+filepath.Join(modules, "recorder", "uid.txt")+" || touch "+filepath.Join(modules, "new"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("uid %d (the build's) can write into the cache entry %s: %s", uid, modules, out)
	}
	t.Logf("installed as uid %s, served by a worker of uid %s", got.InstalledAs, got.RunsAs)
}
