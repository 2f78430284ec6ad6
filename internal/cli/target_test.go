package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a config with no functions and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "polyfn.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTargetBaseURL: the client commands go where the command line says
// (--url, then -c FILE with --listen), then where POLYFN_URL says, and only
// then to the default address, whatever the environment.
func TestTargetBaseURL(t *testing.T) {
	cfg := writeConfig(t, "http:\n  listen: 127.0.0.1:9301\n")
	wildcard := writeConfig(t, "http:\n  listen: 0.0.0.0:9302\n")
	noHTTP := writeConfig(t, "mqtt:\n  listen: 127.0.0.1:9303\n")
	anyPort := writeConfig(t, "http:\n  listen: 127.0.0.1:0\n")
	for _, tc := range []struct {
		name string
		t    target
		env  string
		want string
	}{
		{"default", target{}, "", "http://127.0.0.1:8080"},
		{"env", target{}, "http://127.0.0.1:9400/", "http://127.0.0.1:9400"},
		{"url beats env", target{url: "http://127.0.0.1:9401"}, "http://127.0.0.1:9400", "http://127.0.0.1:9401"},
		{"config", target{file: cfg}, "", "http://127.0.0.1:9301"},
		{"config beats env", target{file: cfg}, "http://127.0.0.1:9400", "http://127.0.0.1:9301"},
		{"url beats config", target{url: "http://127.0.0.1:9401", file: cfg}, "", "http://127.0.0.1:9401"},
		{"listen replaces the config's", target{file: cfg, listen: "127.0.0.1:9402"}, "", "http://127.0.0.1:9402"},
		{"listen alone", target{listen: ":9403"}, "http://127.0.0.1:9400", "http://127.0.0.1:9403"},
		{"wildcard is local", target{file: wildcard}, "", "http://127.0.0.1:9302"},
		{"config default listen", target{file: noHTTP}, "http://127.0.0.1:9400", "http://127.0.0.1:8080"},
		{"any port replaced by listen", target{file: anyPort, listen: "127.0.0.1:9404"}, "", "http://127.0.0.1:9404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(URLEnv, tc.env)
			got, err := tc.t.baseURL()
			if err != nil || got != tc.want {
				t.Fatalf("baseURL() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestTargetBaseURLErrors(t *testing.T) {
	anyPort := writeConfig(t, "http:\n  listen: 127.0.0.1:0\n")
	broken := writeConfig(t, "http:\n  listen: [\n")
	t.Setenv(URLEnv, "http://127.0.0.1:9400")
	for _, tc := range []struct {
		name string
		t    target
		want string
	}{
		{"port 0", target{file: anyPort}, anyPort + ": http.listen: listen address 127.0.0.1:0 has port 0"},
		{"broken config", target{file: broken}, broken + ":"},
		{"missing config", target{file: "/nonexistent/polyfn.yaml"}, "read config: open /nonexistent/polyfn.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.t.baseURL()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("baseURL() = %q, %v; want an error starting %q", got, err, tc.want)
			}
		})
	}
}

// TestTargetBrokerURL: invoke --topic publishes to --broker, else to the
// broker of -c FILE (mqtt.broker, else the embedded one at --mqtt-listen or
// mqtt.listen), else to the embedded broker's default address.
func TestTargetBrokerURL(t *testing.T) {
	embedded := writeConfig(t, "mqtt:\n  listen: 127.0.0.1:9311\n")
	external := writeConfig(t, "mqtt:\n  broker: tcp://127.0.0.1:9312\n")
	defaults := writeConfig(t, "http:\n  listen: 127.0.0.1:9313\n")
	for _, tc := range []struct {
		name string
		t    target
		want string
	}{
		{"default", target{}, "tcp://127.0.0.1:1883"},
		{"mqtt-listen alone", target{mqttListen: "0.0.0.0:9314"}, "tcp://127.0.0.1:9314"},
		{"broker", target{broker: "tcp://127.0.0.1:9315", file: embedded, mqttListen: "127.0.0.1:9316"}, "tcp://127.0.0.1:9315"},
		{"embedded of the config", target{file: embedded}, "tcp://127.0.0.1:9311"},
		{"mqtt-listen replaces the config's", target{file: embedded, mqttListen: "127.0.0.1:9316"}, "tcp://127.0.0.1:9316"},
		{"external of the config", target{file: external}, "tcp://127.0.0.1:9312"},
		{"config defaults", target{file: defaults}, "tcp://127.0.0.1:1883"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.t.load()
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.t.brokerURL(cfg)
			if err != nil || got != tc.want {
				t.Fatalf("brokerURL() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestTargetBrokerURLErrors(t *testing.T) {
	anyPort := writeConfig(t, "mqtt:\n  listen: 127.0.0.1:0\n")
	none := writeConfig(t, "mqtt:\n  embedded: false\n")
	for _, tc := range []struct {
		name string
		t    target
		want string
	}{
		{"port 0", target{file: anyPort}, anyPort + ": mqtt.listen: listen address 127.0.0.1:0 has port 0"},
		{"no broker", target{file: none}, none + ": mqtt.embedded is false and mqtt.broker is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.t.load()
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.t.brokerURL(cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("brokerURL() = %q, %v; want an error starting %q", got, err, tc.want)
			}
		})
	}
	// --mqtt-listen names the port the host took: port 0 in the file no longer matters.
	tg := target{file: anyPort, mqttListen: "127.0.0.1:9317"}
	cfg, err := tg.load()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tg.brokerURL(cfg); err != nil || got != "tcp://127.0.0.1:9317" {
		t.Fatalf("brokerURL() with --mqtt-listen over port 0 = %q, %v", got, err)
	}
}
