package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MQTT configures the MQTT trigger: the embedded broker, or the external
// broker polyfn connects to, and the client polyfn uses for both.
type MQTT struct {
	// Embedded starts an MQTT broker (3.1.1 and 5) inside polyfn, listening
	// on Listen. Nil means on unless Broker is set.
	Embedded *bool `yaml:"embedded"`
	// Listen is the embedded broker's address. Zero means DefaultMQTTListen.
	Listen string `yaml:"listen"`
	// Persist keeps the embedded broker's sessions, subscriptions, retained
	// messages and the QoS 1 and 2 messages its sessions hold in a store
	// under the state directory (StateDir/mqtt), written before a message
	// is acknowledged, so that a restart or a kill -9 loses none of them.
	// Nil means on; false keeps them in memory only.
	Persist *bool `yaml:"persist"`
	// Broker is the URL of an external broker (tcp://, ssl://, ws://, wss://).
	// Empty: the MQTT trigger connects to the embedded broker.
	Broker string `yaml:"broker"`
	// ClientID is polyfn's client id; with a persistent session it must be
	// stable across restarts and unique per host. Zero means DefaultMQTTClientID.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TLS holds the files for ssl:// and wss:// brokers.
	TLS TLS `yaml:"tls"`
	// Share, when set, makes every subscription a shared subscription
	// ($share/SHARE/topic) so that several hosts split one topic's messages.
	Share string `yaml:"share"`
	// InFlight bounds the QoS 1 messages polyfn holds unacknowledged (being
	// invoked, retried or published); past it polyfn stops reading. Zero
	// means DefaultMQTTInFlight.
	InFlight int `yaml:"inflight"`
}

// TLS names the certificate files of a TLS connection. Relative paths are
// relative to the config file's directory.
type TLS struct {
	CA                 string `yaml:"ca"`
	Cert               string `yaml:"cert"`
	Key                string `yaml:"key"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// EmbeddedEnabled reports whether polyfn runs its own broker.
func (m MQTT) EmbeddedEnabled() bool {
	if m.Embedded != nil {
		return *m.Embedded
	}
	return m.Broker == ""
}

// PersistEnabled reports whether the embedded broker keeps a store.
func (m MQTT) PersistEnabled() bool { return m.Persist == nil || *m.Persist }

// Triggers lists what invokes a function besides HTTP and polyfn invoke.
type Triggers struct {
	MQTT  []MQTTRule `yaml:"mqtt"`
	Timer []Timer    `yaml:"timer"`
}

// MQTTRule subscribes a function to a topic and optionally publishes its
// results.
type MQTTRule struct {
	Subscribe Subscription `yaml:"subscribe"`
	// Publish, when set, receives each non-empty result (and the error
	// document of a failed invocation unless Errors is set).
	Publish *Publication `yaml:"publish"`
	// Errors, when set, receives the error documents instead of Publish.
	Errors *Publication `yaml:"errors"`
	// Retry re-runs a failed invocation before its error is published.
	Retry Retry `yaml:"retry"`
}

// Subscription is a topic filter (wildcards + and # allowed) and the QoS
// polyfn subscribes with.
type Subscription struct {
	Topic string `yaml:"topic"`
	QoS   int    `yaml:"qos"`
}

// Publication is a topic (no wildcards) and the highest QoS to publish with;
// the QoS used is min(input QoS, this QoS).
type Publication struct {
	Topic string `yaml:"topic"`
	QoS   int    `yaml:"qos"`
}

// Retry re-runs failed invocations of an MQTT message.
type Retry struct {
	// Max is how many times a failed invocation is re-run (0: never).
	Max int `yaml:"max"`
	// Backoff is the wait before the first retry; it doubles for each
	// further one. Zero means DefaultRetryBackoff.
	Backoff Duration `yaml:"backoff"`
}

// Timer runs a function on a schedule.
type Timer struct {
	// Schedule is a cron expression with five or six fields (seconds first
	// when six), a descriptor such as @hourly, or @every DURATION.
	Schedule string `yaml:"schedule"`
	// Overlap lets a tick start while the previous run of the same schedule
	// is still going; by default such a tick is skipped.
	Overlap bool `yaml:"overlap"`
	// Payload is the body the function receives. Empty: none.
	Payload string `yaml:"payload"`
}

// MQTT and timer defaults. docs/config.md documents them.
const (
	DefaultMQTTListen   = "127.0.0.1:1883"
	DefaultMQTTClientID = "polyfn"
	DefaultMQTTInFlight = 64
	DefaultRetryBackoff = time.Second
)

// ScheduleParser checks a timer schedule; the timer trigger sets it so that
// the config is validated by the parser that runs the schedules.
var ScheduleParser func(string) error

func applyMQTTDefaults(c *Config) {
	if c.MQTT.Listen == "" {
		c.MQTT.Listen = DefaultMQTTListen
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = DefaultMQTTClientID
	}
	if c.MQTT.InFlight == 0 {
		c.MQTT.InFlight = DefaultMQTTInFlight
	}
	for _, p := range []*string{&c.MQTT.TLS.CA, &c.MQTT.TLS.Cert, &c.MQTT.TLS.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(c.Dir, *p)
		}
	}
	for i := range c.Functions {
		for j := range c.Functions[i].Triggers.MQTT {
			r := &c.Functions[i].Triggers.MQTT[j]
			if r.Retry.Backoff == 0 {
				r.Retry.Backoff = Duration(DefaultRetryBackoff)
			}
		}
	}
}

func statFile(p string) (os.FileInfo, error) {
	st, err := os.Stat(p)
	if err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", p)
	}
	return st, err
}

func validateTriggers(c *Config, d *decoder) {
	m := c.MQTT
	if err := checkListen(m.Listen); err != nil {
		d.errorf(d.at("mqtt.listen"), "mqtt.listen", "invalid address %q: %v, such as 127.0.0.1:1883", m.Listen, err)
	}
	if m.Broker != "" {
		u, err := url.Parse(m.Broker)
		switch {
		case err != nil:
			d.errorf(d.at("mqtt.broker"), "mqtt.broker", "invalid URL %q: %v", m.Broker, err)
		case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "tls" && u.Scheme != "mqtt" && u.Scheme != "mqtts" && u.Scheme != "ws" && u.Scheme != "wss":
			d.errorf(d.at("mqtt.broker"), "mqtt.broker", "unknown scheme in %q (known: tcp, ssl, ws, wss)", m.Broker)
		case u.Host == "":
			d.errorf(d.at("mqtt.broker"), "mqtt.broker", "missing host in %q: want such as tcp://127.0.0.1:1883", m.Broker)
		case u.Port() != "":
			if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
				d.errorf(d.at("mqtt.broker"), "mqtt.broker", "invalid port %q in %q: want a number from 1 to 65535", u.Port(), m.Broker)
			}
		}
	}
	if m.Share != "" && strings.ContainsAny(m.Share, "/+#") {
		d.errorf(d.at("mqtt.share"), "mqtt.share", "invalid group %q: no '/', '+' or '#'", m.Share)
	}
	if d.explicitZero("mqtt.inflight") || m.InFlight < 0 {
		d.errorf(d.at("mqtt.inflight"), "mqtt.inflight", "must be above zero (leave it out for the default)")
	}
	for _, k := range []string{"ca", "cert", "key"} {
		if !d.present("mqtt.tls." + k) {
			continue
		}
		p := map[string]string{"ca": m.TLS.CA, "cert": m.TLS.Cert, "key": m.TLS.Key}[k]
		if _, err := statFile(p); err != nil {
			d.errorf(d.at("mqtt.tls."+k), "mqtt.tls."+k, "%v", err)
		}
	}
	if (m.TLS.Cert == "") != (m.TLS.Key == "") {
		d.errorf(d.at("mqtt.tls"), "mqtt.tls", "cert and key go together: set both or neither")
	}
	for i, f := range c.Functions {
		for j, r := range f.Triggers.MQTT {
			p := fmt.Sprintf("functions[%d].triggers.mqtt[%d]", i, j)
			if err := checkTopic(r.Subscribe.Topic, true); err != nil {
				d.errorf(d.at(p+".subscribe.topic"), p+".subscribe.topic", "%v", err)
			}
			checkQoS(d, p+".subscribe.qos", r.Subscribe.QoS)
			for _, out := range []struct {
				key string
				pub *Publication
			}{{"publish", r.Publish}, {"errors", r.Errors}} {
				if out.pub == nil {
					continue
				}
				if err := checkTopic(out.pub.Topic, false); err != nil {
					d.errorf(d.at(p+"."+out.key+".topic"), p+"."+out.key+".topic", "%v", err)
				}
				checkQoS(d, p+"."+out.key+".qos", out.pub.QoS)
			}
			if r.Retry.Max < 0 {
				d.errorf(d.at(p+".retry.max"), p+".retry.max", "must not be negative")
			}
		}
		if len(f.Triggers.MQTT) > 0 && !m.EmbeddedEnabled() && m.Broker == "" {
			p := fmt.Sprintf("functions[%d].triggers.mqtt", i)
			d.errorf(d.at(p), p, "no broker to subscribe to: mqtt.embedded is false and mqtt.broker is not set")
		}
		if len(f.Triggers.MQTT) > 0 && c.Effective(f).Discovery == DiscoveryApp {
			p := fmt.Sprintf("functions[%d].triggers.mqtt", i)
			d.errorf(d.at(p), p, "an Azure Functions app declares its own triggers; MQTT rules are for functions of polyfn.yaml")
		}
		if len(f.Triggers.Timer) > 0 && c.Effective(f).Discovery == DiscoveryApp {
			p := fmt.Sprintf("functions[%d].triggers.timer", i)
			d.errorf(d.at(p), p, "an Azure Functions app declares its own triggers; timers are for functions of polyfn.yaml")
		}
		for j, t := range f.Triggers.Timer {
			p := fmt.Sprintf("functions[%d].triggers.timer[%d]", i, j)
			switch {
			case strings.TrimSpace(t.Schedule) == "":
				d.errorf(d.at(p+".schedule"), p+".schedule", "missing: set a cron expression such as \"*/5 * * * *\" or @every 10s")
			case ScheduleParser != nil:
				if err := ScheduleParser(t.Schedule); err != nil {
					d.errorf(d.at(p+".schedule"), p+".schedule", "invalid schedule %q: %v", t.Schedule, err)
				}
			}
		}
	}
}

func checkQoS(d *decoder, key string, q int) {
	if q != 0 && q != 1 {
		d.errorf(d.at(key), key, "unsupported QoS %d (polyfn supports 0 and 1)", q)
	}
}

// checkTopic validates an MQTT topic name, or a topic filter when filter is
// true (+ and # allowed as whole levels, # last).
func checkTopic(t string, filter bool) error {
	if t == "" {
		return fmt.Errorf("missing: set a topic")
	}
	if strings.HasPrefix(t, "$share/") {
		return fmt.Errorf("topic %q: use mqtt.share for shared subscriptions", t)
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if !filter && strings.ContainsAny(l, "+#") {
			return fmt.Errorf("topic %q: wildcards are not allowed in a publish topic", t)
		}
		if strings.ContainsAny(l, "+#") && len(l) > 1 {
			return fmt.Errorf("topic %q: a wildcard must be a whole level", t)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("topic %q: # must be the last level", t)
		}
	}
	return nil
}
