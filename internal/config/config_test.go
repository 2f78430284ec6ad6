package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeConfig writes text as polyfn.yaml in a fresh directory that also
// holds a code directory named "fn", and returns the file's path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notadir"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "polyfn.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// brokenConfigs are config files with mistakes and the errors they give;
// they seed FuzzParse too.
var brokenConfigs = []struct {
	name string
	text string
	// want lists every expected error as "line:col: key: message fragment".
	want []string
	// n is the number of errors when it is not len(want); 0 means len(want).
	n int
}{
	{"unknown top-level key", "http: {}\nfunctoins: []\n",
		[]string{"2:1: functoins: unknown key"}, 0},
	{"unknown function key", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    handlr: x\n",
		[]string{"5:5: functions[0].handlr: unknown key"}, 0},
	{"wrong type for a list", "functions: {name: a}\n",
		[]string{"1:12: functions: want a list, got a mapping"}, 0},
	{"wrong type for an int", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    concurrency: many\n",
		[]string{`5:18: functions[0].concurrency: want int, got "many"`}, 0},
	{"string given a mapping", "http:\n  listen: {a: 1}\n",
		[]string{"2:11: http.listen: want string, got a mapping"}, 0},
	{"bad duration", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    timeout: 10 seconds\n",
		[]string{`5:14: functions[0].timeout: invalid duration "10 seconds"`}, 0},
	{"bad size", "http:\n  max_body: lots\n",
		[]string{`2:13: http.max_body: invalid size "lots"`}, 0},
	{"bad listen address", "http:\n  listen: localhost\n",
		[]string{`2:11: http.listen: invalid address "localhost"`}, 0},
	{"stream.listen without a port", "stream:\n  listen: 127.0.0.1\n",
		[]string{`2:11: stream.listen: invalid address "127.0.0.1": want HOST:PORT or HOST:LO-HI`}, 0},
	{"stream.listen host name", "stream:\n  listen: example.com:7000\n",
		[]string{`2:11: stream.listen: invalid address "example.com:7000": host "example.com" is not an IP address or localhost`}, 0},
	{"stream.listen reversed range", "stream:\n  listen: 127.0.0.1:7099-7000\n",
		[]string{`2:11: stream.listen: invalid address "127.0.0.1:7099-7000": port range "7099-7000": want 0 < LO <= HI`}, 0},
	{"stream.listen range from 0", "stream:\n  listen: 127.0.0.1:0-10\n",
		[]string{`2:11: stream.listen: invalid address "127.0.0.1:0-10": port range "0-10"`}, 0},
	{"stream.listen port too large", "stream:\n  listen: 127.0.0.1:70000\n",
		[]string{`2:11: stream.listen: invalid address "127.0.0.1:70000": port "70000" is not a number`}, 0},
	{"stream.listen not loopback", "stream:\n  listen: 0.0.0.0:7000\n",
		[]string{`2:11: stream.listen: 0.0.0.0 is not a loopback address: set stream.allow_remote: true`}, 0},
	{"stream.listen not loopback, allow_remote false", "stream:\n  listen: \"[::]:7000-7010\"\n  allow_remote: false\n",
		[]string{`2:11: stream.listen: :: is not a loopback address`}, 0},
	{"duplicate function name", "functions:\n  - {name: a, handler: a.h, codedir: fn}\n  - {name: a, handler: a.h, codedir: fn}\n",
		[]string{`3:12: functions[1].name: duplicate function name "a" (first defined at line 2)`}, 0},
	{"missing handler", "functions:\n  - name: a\n    codedir: fn\n",
		[]string{"2:5: functions[0].handler: missing"}, 0},
	{"missing codedir", "functions:\n  - name: a\n    handler: a.h\n",
		[]string{"2:5: functions[0].codedir: missing"}, 0},
	{"missing name", "functions:\n  - handler: a.h\n    codedir: fn\n",
		[]string{"2:5: functions[0].name: missing"}, 0},
	{"codedir does not exist", "functions:\n  - name: a\n    handler: a.h\n    codedir: nowhere\n",
		[]string{"4:14: functions[0].codedir: directory /", "/nowhere does not exist"}, 1},
	{"codedir is a file", "functions:\n  - name: a\n    handler: a.h\n    codedir: notadir\n",
		[]string{"4:14: functions[0].codedir: /", "/notadir is not a directory"}, 1},
	{"invalid name", "functions:\n  - name: a/b\n    handler: a.h\n    codedir: fn\n",
		[]string{`2:11: functions[0].name: invalid name "a/b"`}, 0},
	{"unknown runtime", "functions:\n  - name: a\n    runtime: cobol\n    handler: a.h\n    codedir: fn\n",
		[]string{`3:14: functions[0].runtime: unknown runtime "cobol"`}, 0},
	{"explicit zero concurrency", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    concurrency: 0\n",
		[]string{"5:18: functions[0].concurrency: must be above zero"}, 0},
	{"explicit zero timeout", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    timeout: 0s\n",
		[]string{"5:14: functions[0].timeout: must be above zero"}, 0},
	{"max below min", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    instances: {min: 3, max: 2}\n",
		[]string{"5:30: functions[0].instances.max: max (2) is below min (3)"}, 0},
	{"declared runtime without protocol and command", "runtimes:\n  mine:\n    env: {A: b}\n",
		[]string{"3:5: runtimes.mine.protocol: missing", "3:5: runtimes.mine.command: missing"}, 0},
	{"declared runtime with unknown protocol", "runtimes:\n  mine:\n    protocol: carrier-pigeon\n    command: [x]\n",
		[]string{`3:15: runtimes.mine.protocol: unknown protocol "carrier-pigeon"`}, 0},
	{"duplicate key", "http:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n",
		[]string{"3:3: http.listen: duplicate key"}, 0},
	{"several problems at once", "http:\n  bogus: 1\nfunctions:\n  - name: a\n    timeout: soon\n",
		[]string{"2:3: http.bogus: unknown key", "4:5: functions[0].handler: missing", "4:5: functions[0].codedir: missing", `5:14: functions[0].timeout: invalid duration "soon"`}, 0},
	{"app function sets pool settings", "functions:\n  - {name: a, handler: a.h, codedir: fn, app: x, concurrency: 2}\n",
		[]string{"2:63: functions[0].concurrency: belongs to the app: set it under apps.x"}, 0},
	{"app with two runtimes", "runtimes:\n  other: {protocol: call, command: [x]}\nfunctions:\n  - {name: a, handler: a.h, codedir: fn, app: x}\n  - {name: b, handler: a.h, codedir: fn, app: x, runtime: other}\n",
		[]string{"5:59: functions[1].runtime: app x runs runtime python3"}, 0},
	{"app nobody uses", "apps:\n  lonely: {concurrency: 2}\n",
		[]string{"2:11: apps.lonely: no function names app lonely"}, 0},
	{"timer without schedule", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    triggers:\n      timer:\n        - {overlap: true}\n",
		[]string{"7:11: functions[0].triggers.timer[0].schedule: missing"}, 0},
	{"timer on an Azure Functions app", "runtimes:\n  az: {protocol: stream, command: [x]}\nfunctions:\n  - name: a\n    runtime: az\n    codedir: fn\n    triggers:\n      timer: [{schedule: '@every 1m'}]\n",
		[]string{"8:14: functions[0].triggers.timer: an Azure Functions app declares its own triggers"}, 0},
	{"mqtt rule without a broker", "mqtt: {embedded: false}\nfunctions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    triggers:\n      mqtt: [{subscribe: {topic: t}}]\n",
		[]string{"7:13: functions[0].triggers.mqtt: no broker to subscribe to"}, 0},
	{"mqtt rule on an Azure Functions app", "runtimes:\n  az: {protocol: stream, command: [x]}\nfunctions:\n  - name: a\n    runtime: az\n    codedir: fn\n    triggers:\n      mqtt: [{subscribe: {topic: t}}]\n",
		[]string{"8:13: functions[0].triggers.mqtt: an Azure Functions app declares its own triggers"}, 0},
	{"limits below what a worker needs", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n    limits: {memory: 10Mi, pids: 5, cpu: 0.001}\n",
		[]string{"5:22: functions[0].limits.memory: 10485760 bytes is below what a worker needs to start: at least 50Mi",
			"5:34: functions[0].limits.pids: 5 is below what a worker needs to start: at least 20",
			"5:42: functions[0].limits.cpu: 0.001 is too small"}, 0},
	{"explicit zero limits", "apps:\n  x: {limits: {memory: 0, pids: 0, cpu: 0}}\nfunctions:\n  - {name: a, handler: a.h, codedir: fn, app: x}\n",
		[]string{"2:24: apps.x.limits.memory: must be above zero", "2:33: apps.x.limits.pids: must be above zero", "2:41: apps.x.limits.cpu: must be above zero"}, 0},
	{"unknown user and group", "functions:\n  - {name: a, handler: a.h, codedir: fn, user: no-such-user, group: no-such-group}\n",
		[]string{`2:48: functions[0].user: unknown user "no-such-user"`, `2:69: functions[0].group: unknown group "no-such-group"`}, 0},
	{"app function sets limits and user", "functions:\n  - {name: a, handler: a.h, codedir: fn, app: x, limits: {memory: 64Mi}, user: nobody}\n",
		[]string{"2:58: functions[0].limits: belongs to the app: set it under apps.x", "2:80: functions[0].user: belongs to the app: set it under apps.x"}, 0},
	{"not YAML", "functions: [\n", []string{"1:12: (file): invalid YAML: did not find expected node content"}, 0},
	{"YAML error on line 4", "http:\n  listen: 127.0.0.1:8080\nfunctions:\n  - name: a: b\n",
		[]string{"4:12: (file): invalid YAML: mapping values are not allowed in this context"}, 0},
	{"YAML error in a block begun earlier", "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n   env: {}\n",
		[]string{"5:4: (file): invalid YAML: did not find expected '-' indicator"}, 0},
	{"unclosed quote", "functions:\n  - name: a\n    handler: 'a.h\n    codedir: fn\n",
		[]string{"3:14: (file): invalid YAML: found unexpected end of stream"}, 0},
	{"unknown anchor", "functions:\n  - name: a\n    handler: a.h\n    codedir: *dir\n",
		[]string{"4:17: (file): invalid YAML: unknown anchor 'dir' referenced"}, 0},
	{"empty file", "", []string{"1:1: (file): the file is empty"}, 0},
	{"only comments", "# functions to come\n\n", []string{"1:1: (file): the file is empty"}, 0},
	{"empty document", "---\n", []string{"1:1: (file): the file is empty"}, 0},
	{"two documents", "http: {}\n---\nfunctions: []\n", []string{"3:1: (file): a second YAML document"}, 0},
	{"not a mapping", "- name: a\n", []string{"1:1: (file): want a mapping of sections"}, 0},
	{"empty env name", "functions:\n  - {name: a, handler: a.h, codedir: fn, env: {'': x}}\n",
		[]string{`2:52: functions[0].env."": empty variable name`}, 0},
	{"env name with =", "functions:\n  - {name: a, handler: a.h, codedir: fn, env: {A=B: x}}\n",
		[]string{`2:53: functions[0].env.A=B: invalid variable name "A=B"`}, 0},
	{"env value with NUL", "functions:\n  - {name: a, handler: a.h, codedir: fn, env: {A: \"x\\0y\"}}\n",
		[]string{"2:51: functions[0].env.A: the value contains a NUL byte"}, 0},
	{"bad env names of a runtime and an app", "runtimes:\n  mine: {protocol: call, command: [x], env: {'=': y}}\napps:\n  x: {env: {'': z}}\nfunctions:\n  - {name: a, handler: a.h, codedir: fn, app: x}\n",
		[]string{`2:51: runtimes.mine.env.=: invalid variable name "="`, `4:17: apps.x.env."": empty variable name`}, 0},
	{"command with NUL", "runtimes:\n  mine: {protocol: call, command: [\"x\\0\"]}\n",
		[]string{"2:36: runtimes.mine.command[0]: contains a NUL byte"}, 0},
	{"limits.cpu out of range", "functions:\n  - {name: a, handler: a.h, codedir: fn, limits: {cpu: 1e300}}\n  - {name: b, handler: a.h, codedir: fn, limits: {cpu: .inf}}\n" +
		"  - {name: c, handler: a.h, codedir: fn, limits: {cpu: .nan}}\n  - {name: d, handler: a.h, codedir: fn, limits: {cpu: 1e11}}\n",
		[]string{"2:56: functions[0].limits.cpu: 1e+300 is too large: at most 1024 CPUs",
			"3:56: functions[1].limits.cpu: +Inf is not a number of CPUs",
			"4:56: functions[2].limits.cpu: NaN is not a number of CPUs",
			"5:56: functions[3].limits.cpu: 1e+11 is too large: at most 1024 CPUs"}, 0},
	{"limits.pids above the kernel's", "functions:\n  - {name: a, handler: a.h, codedir: fn, limits: {pids: 100000000}}\n",
		[]string{"2:57: functions[0].limits.pids: 100000000 is above what the kernel allows"}, 0},
	{"http port above 65535", "http:\n  listen: 127.0.0.1:65536\n",
		[]string{`2:11: http.listen: invalid address "127.0.0.1:65536": port "65536" is not a number from 0 to 65535`}, 0},
	{"mqtt ports above 65535", "mqtt:\n  listen: 127.0.0.1:99999\n  broker: tcp://127.0.0.1:70000\n",
		[]string{`2:11: mqtt.listen: invalid address "127.0.0.1:99999"`, `3:11: mqtt.broker: invalid port "70000"`}, 0},
	{"instances.min above the host's", "functions:\n  - {name: a, handler: a.h, codedir: fn, instances: {min: 100000}}\n",
		[]string{"2:59: functions[0].instances.min: 100000 is above scaling.max_instances (256)"}, 0},
	{"instances.min adding up above the host's", "scaling: {max_instances: 4}\napps:\n  x: {instances: {min: 2}}\nfunctions:\n" +
		"  - {name: a, handler: a.h, codedir: fn, instances: {min: 3}}\n  - {name: b, handler: a.h, codedir: fn, app: x}\n",
		[]string{"5:59: functions[0].instances.min: the instances.min of the functions and apps so far add up to 5, above scaling.max_instances (4)"}, 0},
	{"explicit zero http bounds", "http:\n  max_connections: 0\n  body_timeout: 0s\n",
		[]string{"2:20: http.max_connections: must be above zero", "3:17: http.body_timeout: must be above zero"}, 0},
	{"body budget below max_body", "http:\n  max_body: 8Mi\n  max_body_total: 4Mi\n",
		[]string{"3:19: http.max_body_total: 4194304 bytes is below http.max_body (8388608)"}, 0},
	{"negative connections", "http: {max_connections: -1}\n",
		[]string{"1:25: http.max_connections: must be above zero"}, 0},
}

func TestBrokenConfigs(t *testing.T) {
	for _, tt := range brokenConfigs {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.text)
			_, err := Load(path)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Load: got %v, want config errors", err)
			}
			got := err.Error()
			for _, line := range strings.Split(got, "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("error %q does not start with the file name", line)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors:\n%s\nwant one containing %q", got, w)
				}
			}
			n := tt.n
			if n == 0 {
				n = len(tt.want)
			}
			if len(errs) != n {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), n, got)
			}
		})
	}
}

func TestDefaultsAndRelativeCodedir(t *testing.T) {
	path := writeConfig(t, "functions:\n  - name: a\n    handler: a.h\n    codedir: fn\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Functions[0]
	if want := filepath.Join(filepath.Dir(path), "fn"); f.Codedir != want {
		t.Errorf("codedir %q, want %q (relative to the config file)", f.Codedir, want)
	}
	if want := (HTTP{Listen: DefaultListen, MaxBody: DefaultMaxBody, MaxBodyTotal: DefaultMaxBodyTotal, MaxStreamBody: DefaultMaxStreamBody, MaxHeaderBytes: DefaultMaxHeaderBytes,
		MaxConnections: DefaultMaxConnections, ReadHeaderTimeout: Duration(DefaultReadHeaderTimeout), BodyTimeout: Duration(DefaultBodyTimeout),
		WriteTimeout: Duration(DefaultWriteTimeout), IdleTimeout: Duration(DefaultIdleTimeout)}); c.HTTP != want {
		t.Errorf("http defaults: %+v, want %+v", c.HTTP, want)
	}
	// The body budget follows a max_body set above it.
	if big, err := Parse(path, []byte("http: {max_body: 100Mi}\n")); err != nil || big.HTTP.MaxBodyTotal != 100<<20 {
		t.Errorf("max_body_total with max_body 100Mi: %v, %v; want 100Mi", big, err)
	}
	if f.Runtime != DefaultRuntime || f.Timeout.D() != DefaultTimeout || f.Concurrency != DefaultConcurrency ||
		f.Queue != DefaultQueue || f.Instances.Max != DefaultMaxInstances || f.Instances.Idle.D() != DefaultIdle {
		t.Errorf("function defaults: %+v", f)
	}
	rt := c.Runtimes["python3"]
	if rt.Protocol != ProtocolStream || rt.Discovery != DiscoveryConfig || rt.StartTimeout.D() != DefaultStartTimeout ||
		rt.StopGrace.D() != DefaultStopGrace || rt.InitTimeout.D() != DefaultInitTimeout {
		t.Errorf("python3 runtime defaults: %+v", rt)
	}
	if eff := c.Effective(f); eff.Protocol != ProtocolStream || eff.Command[2] != "polyfn_runtime" {
		t.Errorf("effective runtime of a function without protocol: %+v", eff)
	}
}

func TestProtocolSelection(t *testing.T) {
	path := writeConfig(t, `
runtimes:
  azure-node:
    protocol: stream
    command: [node, worker.js]
functions:
  - {name: a, handler: a.h, codedir: fn, protocol: call}
  - {name: app, runtime: azure-node, codedir: fn}
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if eff := c.Effective(c.Functions[0]); eff.Protocol != ProtocolCall || eff.Command[len(eff.Command)-1] != "{config}" {
		t.Errorf("protocol: call on python3 must select the call command: %+v", eff)
	}
	if eff := c.Effective(c.Functions[1]); eff.Protocol != ProtocolStream || eff.Discovery != DiscoveryApp {
		t.Errorf("a declared stream runtime discovers an app: %+v", eff)
	}
	_, err = Parse(path, []byte(`
runtimes:
  baetyl: {protocol: call, command: [x]}
functions:
  - {name: a, runtime: baetyl, handler: a.h, codedir: fn, protocol: stream}
`))
	if err == nil || !strings.Contains(err.Error(), "5:69: functions[0].protocol: runtime baetyl speaks only the call protocol") {
		t.Errorf("stream on a call-only runtime: got %v", err)
	}
}

func TestDeclaredRuntimeOverridesBuiltin(t *testing.T) {
	path := writeConfig(t, `
runtimes:
  python3:
    protocol: call
    command: [/opt/py/bin/python3, -m, polyfn_runtime]
    start_timeout: 1m
functions:
  - {name: a, handler: a.h, codedir: fn, instances: {min: 6}, timeout: 1500ms}
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rt := c.Runtimes["python3"]
	if rt.Command[0] != "/opt/py/bin/python3" || rt.StartTimeout.D() != time.Minute || rt.Address != "tcp" {
		t.Errorf("runtime: %+v", rt)
	}
	f := c.Functions[0]
	if f.Instances.Max != 6 || f.Timeout.D() != 1500*time.Millisecond {
		t.Errorf("max should rise to min when unset, timeout parsed: %+v", f)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "6Mi": 6 << 20, "1Gi": 1 << 30, "2k": 2000, "3M": 3e6} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5Mi", "Mi", "12Ti"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded, want an error", in)
		}
	}
}

func TestIsolationConfig(t *testing.T) {
	c, err := Load(writeConfig(t, "functions:\n  - {name: a, handler: a.h, codedir: fn}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi := c.Isolation.UIDRange(); c.Isolation.User != UserAuto || lo != 61184 || hi != 65519 {
		t.Errorf("defaults: user %q, uids %d-%d; want auto, 61184-65519", c.Isolation.User, lo, hi)
	}
	for text, want := range map[string]string{
		"isolation: {uids: 0-10}\n":           "1:19: isolation.uids: invalid range",
		"isolation: {uids: 70000-60000}\n":    "1:19: isolation.uids: invalid range",
		"isolation: {uids: many}\n":           "1:19: isolation.uids: invalid range",
		"isolation: {user: no-such-user}\n":   `1:19: isolation.user: unknown user "no-such-user"`,
		"isolation: {user: auto, bogus: 1}\n": "1:25: isolation.bogus: unknown key",
	} {
		_, err := Load(writeConfig(t, text+"functions:\n  - {name: a, handler: a.h, codedir: fn}\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", text, err, want)
		}
	}
	for _, text := range []string{"isolation: {user: host}\n", "isolation: {user: root, uids: 100000-100999}\n"} {
		if _, err := Load(writeConfig(t, text+"functions:\n  - {name: a, handler: a.h, codedir: fn}\n")); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// state_dir is relative to the config file; without it the state directory
// is the default one, which XDG_STATE_HOME moves. mqtt.persist is on unless
// it says false.
func TestStateDir(t *testing.T) {
	xdg := t.TempDir()
	t.Setenv("XDG_STATE_HOME", xdg)
	c, err := Load(writeConfig(t, "state_dir: state\nmqtt: {persist: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir, "state"); c.StateDir != want {
		t.Errorf("state_dir: state gives %s, want %s", c.StateDir, want)
	}
	if c.MQTT.PersistEnabled() {
		t.Error("mqtt.persist: false: persistence is on")
	}
	c, err = Load(writeConfig(t, "http: {listen: \"127.0.0.1:8080\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(xdg, "polyfn"); c.StateDir != want {
		t.Errorf("without state_dir, with XDG_STATE_HOME=%s: %s, want %s", xdg, c.StateDir, want)
	}
	if !c.MQTT.PersistEnabled() {
		t.Error("persistence is off by default")
	}
	t.Setenv("XDG_STATE_HOME", "relative")
	if d := DefaultStateDir(); d == "relative/polyfn" || os.Geteuid() == 0 && d != "/var/lib/polyfn" {
		t.Errorf("with a relative XDG_STATE_HOME (ignored), as uid %d: the default is %q", os.Geteuid(), d)
	}
}

func TestStreamListen(t *testing.T) {
	for _, tt := range []struct {
		text string
		want StreamListen
	}{
		{"http: {}\n", StreamListen{Addr: netip.MustParseAddr("127.0.0.1")}},
		{"stream: {listen: \"127.0.0.1:7000\"}\n", StreamListen{Addr: netip.MustParseAddr("127.0.0.1"), Lo: 7000, Hi: 7000}},
		{"stream: {listen: \"localhost:7000-7099\"}\n", StreamListen{Addr: netip.MustParseAddr("127.0.0.1"), Lo: 7000, Hi: 7099}},
		{"stream: {listen: \"[::1]:7000\"}\n", StreamListen{Addr: netip.MustParseAddr("::1"), Lo: 7000, Hi: 7000}},
		{"stream: {listen: \"0.0.0.0:7000\", allow_remote: true}\n", StreamListen{Addr: netip.MustParseAddr("0.0.0.0"), Lo: 7000, Hi: 7000}},
	} {
		c, err := Parse(filepath.Join(t.TempDir(), "polyfn.yaml"), []byte(tt.text))
		if err != nil {
			t.Fatalf("%q: %v", tt.text, err)
		}
		got, err := ParseStreamListen(c.Stream.Listen)
		if err != nil || got != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v", tt.text, got, err, tt.want)
		}
	}
}
