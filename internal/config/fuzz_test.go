package config

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse loads arbitrary config text. Parse must not panic, must give
// the same answer twice, and either
//   - refuses the text with errors of the form file:line:column: key:
//     message, one line each, in file order; or
//   - accepts it, and then the config is one the host can serve: every
//     default applied and every value within the bounds the host and the
//     kernel accept.
func FuzzParse(f *testing.F) {
	for _, tt := range brokenConfigs {
		f.Add([]byte(tt.text))
	}
	for _, p := range []string{"../../examples/polyfn.yaml", "../../bench/polyfn.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`
http: {listen: "127.0.0.1:0", max_body: 1Mi}
mqtt: {listen: "127.0.0.1:0", inflight: 8}
scaling: {max_instances: 8, max_starting: 2}
runtimes:
  mine: {protocol: call, command: [x, "{config}"], env: {A: b}, address: unix, start_timeout: 1s}
apps:
  shared: {concurrency: 2, instances: {min: 1, max: 2}, env: {REGION: eu}, limits: {memory: 64Mi, pids: 64, cpu: 0.5}}
functions:
  - {name: a, handler: a.h, codedir: fn, timeout: 2s, instances: {min: 1}, limits: {cpu: 2}}
  - {name: b, handler: a.h, codedir: fn, app: shared}
  - {name: c, runtime: mine, handler: c.h, codedir: fn, env: {X: "1"},
     triggers: {mqtt: [{subscribe: {topic: "a/+/b", qos: 1}, publish: {topic: out}, retry: {max: 2, backoff: 10ms}}],
                timer: [{schedule: "@every 1m", payload: hi}]}}
`))
	dir := f.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notadir"), nil, 0o644); err != nil {
		f.Fatal(err)
	}
	file := filepath.Join(dir, "polyfn.yaml")

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(file, data)
		c2, err2 := Parse(file, data)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("two parses of the same text differ:\n%v\n%v", err, err2)
		}
		if err != nil {
			checkErrors(t, file, err)
			return
		}
		if c == nil || c2 == nil {
			t.Fatal("no config and no error")
		}
		checkServable(t, c)
	})
}

func checkErrors(t *testing.T, file string, err error) {
	t.Helper()
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("error %v (%T) is not config errors", err, err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(errs) {
		t.Fatalf("%d errors print as %d lines:\n%s", len(errs), len(lines), err)
	}
	for i, e := range errs {
		if e.File != file || e.Line < 1 || e.Column < 1 || e.Key == "" || e.Msg == "" {
			t.Fatalf("error %d lacks its file, position, key or message: %#v", i, e)
		}
		if i > 0 && (e.Line < errs[i-1].Line || e.Line == errs[i-1].Line && e.Column < errs[i-1].Column) {
			t.Fatalf("errors out of file order:\n%s", err)
		}
	}
}

func checkServable(t *testing.T, c *Config) {
	t.Helper()
	if err := checkListen(c.HTTP.Listen); err != nil {
		t.Fatalf("http.listen %q accepted: %v", c.HTTP.Listen, err)
	}
	if err := checkListen(c.MQTT.Listen); err != nil {
		t.Fatalf("mqtt.listen %q accepted: %v", c.MQTT.Listen, err)
	}
	if c.HTTP.MaxBody <= 0 || c.Scaling.MaxInstances < 1 || c.Scaling.MaxStarting < 1 || c.MQTT.InFlight < 1 {
		t.Fatalf("bounds below one accepted: http %+v, scaling %+v, mqtt.inflight %d", c.HTTP, c.Scaling, c.MQTT.InFlight)
	}
	for name, rt := range c.Runtimes {
		if len(rt.Command) == 0 || rt.Command[0] == "" || rt.StartTimeout <= 0 || rt.StopGrace <= 0 || rt.InitTimeout <= 0 || rt.CancelGrace <= 0 {
			t.Fatalf("runtime %q accepted without a command or a timeout: %+v", name, rt)
		}
		checkArgs(t, "runtime "+name, rt.Command)
		checkArgs(t, "runtime "+name, rt.CallCommand)
		checkEnv(t, "runtime "+name, rt.Env)
	}
	total := 0
	pool := func(what string, concurrency, queue int, in Instances, l Limits, env map[string]string) {
		if concurrency < 1 || queue < 1 || in.Min < 0 || in.Max < max(in.Min, 1) || in.Min > c.Scaling.MaxInstances || in.Idle <= 0 {
			t.Fatalf("%s accepted with pool settings the host cannot keep: concurrency %d, queue %d, instances %+v, scaling %+v",
				what, concurrency, queue, in, c.Scaling)
		}
		total += in.Min
		cpuOK := l.CPU == 0 || l.CPU >= MinCPULimit && l.CPU <= MaxCPULimit
		if !cpuOK || l.Pids != 0 && (l.Pids < MinPidsLimit || l.Pids > MaxPidsLimit) || l.Memory != 0 && l.Memory < MinMemoryLimit {
			t.Fatalf("%s accepted with limits a worker cannot start with: %+v (cpu NaN: %v)", what, l, math.IsNaN(l.CPU))
		}
		checkEnv(t, what, env)
	}
	names := map[string]bool{}
	for _, fn := range c.Functions {
		if fn.Name == "" || names[fn.Name] || !nameRE.MatchString(fn.Name) {
			t.Fatalf("function name %q accepted", fn.Name)
		}
		names[fn.Name] = true
		if _, ok := c.Runtimes[fn.Runtime]; !ok {
			t.Fatalf("function %s accepted with unknown runtime %q", fn.Name, fn.Runtime)
		}
		if fn.Timeout <= 0 {
			t.Fatalf("function %s accepted with timeout %v", fn.Name, fn.Timeout)
		}
		if st, err := os.Stat(fn.Codedir); !filepath.IsAbs(fn.Codedir) || err != nil || !st.IsDir() {
			t.Fatalf("function %s accepted with codedir %q: %v", fn.Name, fn.Codedir, err)
		}
		if fn.App == "" {
			pool("function "+fn.Name, fn.Concurrency, fn.Queue, fn.Instances, fn.Limits, fn.Env)
		}
		for _, r := range fn.Triggers.MQTT {
			if r.Subscribe.QoS < 0 || r.Subscribe.QoS > 1 || r.Retry.Max < 0 || r.Retry.Backoff <= 0 {
				t.Fatalf("function %s accepted with MQTT rule %+v", fn.Name, r)
			}
		}
	}
	for name, a := range c.Apps {
		pool("app "+name, a.Concurrency, a.Queue, a.Instances, a.Limits, a.Env)
	}
	if total > c.Scaling.MaxInstances {
		t.Fatalf("instances.min add up to %d, above scaling.max_instances %d", total, c.Scaling.MaxInstances)
	}
}

func checkArgs(t *testing.T, what string, args []string) {
	t.Helper()
	for _, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			t.Fatalf("%s accepted with a NUL in argument %q", what, a)
		}
	}
}

func checkEnv(t *testing.T, what string, env map[string]string) {
	t.Helper()
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			t.Fatalf("%s accepted with environment variable %q=%q", what, k, v)
		}
	}
}
