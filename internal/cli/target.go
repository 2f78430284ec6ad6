package cli

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/config"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// URLEnv names the environment variable that gives the client commands
// (status, invoke) the base URL of the host when no flag does.
const URLEnv = "POLYFN_URL"

// defaultURL is the host the client commands talk to when neither a flag nor
// URLEnv names one: the HTTP trigger's default address.
const defaultURL = "http://" + config.DefaultListen

// target is where a client command finds the running host: the flags it
// shares with polyfn serve (-c, --listen, --mqtt-listen) and its own (--url,
// --broker).
type target struct {
	url, file, listen  string
	broker, mqttListen string
	// key is sent in x-polyfn-key: --key, else $POLYFN_KEY.
	key string
}

// KeyEnv names the environment variable holding the key the client
// commands send when --key is not given.
const KeyEnv = "POLYFN_KEY"

// setKey puts the key, if there is one, on req.
func (t *target) setKey(req *http.Request) {
	key := t.key
	if key == "" {
		key = os.Getenv(KeyEnv)
	}
	if key != "" {
		req.Header.Set(httptrigger.KeyHeader, key)
	}
}

// httpFlags adds the flags that locate the host's HTTP trigger.
func (t *target) httpFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.url, "url", "", "base URL of the host (default: from -c FILE, else $"+URLEnv+", else "+defaultURL+")")
	cmd.Flags().StringVarP(&t.file, "config", "c", "", "the host's config file: its http.listen (and, with --topic, its broker and result topics)")
	cmd.Flags().StringVar(&t.listen, "listen", "", "the --listen the host was started with: replaces http.listen of -c FILE")
	cmd.Flags().StringVar(&t.key, "key", "", "the key to send in x-polyfn-key (default: $"+KeyEnv+", which keeps it out of the process list)")
}

// mqttFlags adds the flags that locate the MQTT broker of invoke --topic.
func (t *target) mqttFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.broker, "broker", "", "with --topic: the MQTT broker URL (default: the broker of -c FILE, else tcp://"+config.DefaultMQTTListen+")")
	cmd.Flags().StringVar(&t.mqttListen, "mqtt-listen", "", "with --topic: the --mqtt-listen the host was started with: replaces mqtt.listen of -c FILE")
}

// load reads -c FILE, if given, with --listen and --mqtt-listen applied as
// polyfn serve applies them.
func (t *target) load() (*config.Config, error) {
	if t.file == "" {
		return nil, nil
	}
	cfg, err := config.Load(t.file)
	if err != nil {
		return nil, err
	}
	if t.listen != "" {
		cfg.HTTP.Listen = t.listen
	}
	if t.mqttListen != "" {
		cfg.MQTT.Listen = t.mqttListen
	}
	return cfg, nil
}

// baseURL is the host's base URL: --url; else the HTTP address of -c FILE
// (or --listen); else $POLYFN_URL; else defaultURL. Flags come before the
// environment, so that a command line says where it goes.
func (t *target) baseURL() (string, error) {
	if t.url != "" {
		return strings.TrimRight(t.url, "/"), nil
	}
	if t.file != "" || t.listen != "" {
		addr, from := t.listen, "--listen"
		if addr == "" {
			cfg, err := t.load()
			if err != nil {
				return "", err
			}
			addr, from = cfg.HTTP.Listen, cfg.File+": http.listen"
		}
		hp, err := dialAddr(addr)
		if err != nil {
			return "", fmt.Errorf("%s: %w; pass --url", from, err)
		}
		return "http://" + hp, nil
	}
	if u := os.Getenv(URLEnv); u != "" {
		return strings.TrimRight(u, "/"), nil
	}
	return defaultURL, nil
}

// brokerURL is the MQTT broker of invoke --topic, with cfg the config of -c
// (nil without one): --broker; else the config's external broker
// (mqtt.broker), else its embedded broker at --mqtt-listen or mqtt.listen;
// else the embedded broker at --mqtt-listen or its default address.
func (t *target) brokerURL(cfg *config.Config) (string, error) {
	if t.broker != "" {
		return t.broker, nil
	}
	addr, from := t.mqttListen, "--mqtt-listen"
	if cfg != nil {
		if cfg.MQTT.Broker != "" {
			return cfg.MQTT.Broker, nil
		}
		if !cfg.MQTT.EmbeddedEnabled() {
			return "", fmt.Errorf("%s: mqtt.embedded is false and mqtt.broker is not set: the host has no broker; pass --broker", cfg.File)
		}
		if t.mqttListen == "" {
			addr, from = cfg.MQTT.Listen, cfg.File+": mqtt.listen"
		}
	}
	if addr == "" {
		addr = config.DefaultMQTTListen
	}
	hp, err := dialAddr(addr)
	if err != nil {
		return "", fmt.Errorf("%s: %w; pass --broker", from, err)
	}
	return mqtttrigger.LocalURL(hp), nil
}

// dialAddr turns a listen address into one to connect to: a wildcard or
// empty host becomes 127.0.0.1. Port 0 is refused: the port the host picked
// is known only to it.
func dialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("listen address %s has port 0 (any free port): the port the host took is not in the config", listen)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
