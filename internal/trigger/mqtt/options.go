package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/config"
)

// Options say how to reach a broker and how the trigger behaves there.
type Options struct {
	// URL is the broker: tcp://, ssl:// (tls://, mqtts://), ws:// or wss://.
	URL string
	// ClientID is the base of the trigger's client ids: each subscription
	// has a session of its own, named ClientID-XXXXXXXX after its filter.
	ClientID string
	Username string
	Password string
	// TLS configures ssl:// and wss:// connections; nil: the system's roots.
	TLS *tls.Config
	// Share, when set, subscribes as $share/Share/FILTER.
	Share string
	// InFlight bounds the messages of one subscription being handled at once.
	InFlight int
	// FlowControl announces InFlight to the broker as the MQTT 5 Receive
	// Maximum, so that it sends no more unacknowledged QoS 1 messages than
	// that. Off for the embedded broker (see docs/triggers.md).
	FlowControl bool
	Log         *slog.Logger
}

// ClientOptions returns the options for the broker m names: the external
// broker when mqtt.broker is set, else the embedded one at embeddedURL.
func ClientOptions(m config.MQTT, embeddedURL string, log *slog.Logger) (Options, error) {
	o := Options{ClientID: m.ClientID, Share: m.Share, InFlight: m.InFlight, Log: log}
	if o.InFlight <= 0 {
		o.InFlight = config.DefaultMQTTInFlight
	}
	if o.ClientID == "" {
		o.ClientID = config.DefaultMQTTClientID
	}
	if m.Broker == "" {
		o.URL = embeddedURL
		return o, nil
	}
	o.URL, o.Username, o.Password, o.FlowControl = m.Broker, m.Username, m.Password, true
	if m.TLS != (config.TLS{}) {
		c, err := TLSConfig(m.TLS)
		if err != nil {
			return o, err
		}
		o.TLS = c
	}
	return o, nil
}

// TLSConfig loads the files of an mqtt.tls section.
func TLSConfig(t config.TLS) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca: no PEM certificate in %s", t.CA)
		}
		c.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert, mqtt.tls.key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// brokerURL parses o.URL; mqtt.broker was validated, so errors are rare.
func (o Options) brokerURL() (*url.URL, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", o.URL, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("broker URL %q: no host", o.URL)
	}
	return u, nil
}

// clientConfig is the autopaho configuration shared by the trigger's
// sessions and polyfn invoke --topic.
// connectTimeout bounds one connection attempt to the broker (TCP, TLS and
// CONNACK).
const connectTimeout = 10 * time.Second

func (o Options) clientConfig(u *url.URL, clientID string) autopaho.ClientConfig {
	return autopaho.ClientConfig{
		ServerUrls:       []*url.URL{u},
		TlsCfg:           o.TLS,
		KeepAlive:        30,
		ConnectTimeout:   connectTimeout,
		ReconnectBackoff: autopaho.NewExponentialBackoff(100*time.Millisecond, 10*time.Second, 500*time.Millisecond, 2),
		ConnectUsername:  o.Username,
		ConnectPassword:  []byte(o.Password),
		ClientConfig:     paho.ClientConfig{ClientID: clientID},
	}
}

// sharedFilter is the filter as subscribed: $share/GROUP/filter when the
// subscriptions are shared.
func sharedFilter(share, filter string) string {
	if share == "" {
		return filter
	}
	return "$share/" + share + "/" + filter
}

// TopicMatches reports whether topic matches the filter (+ and # wildcards;
// a filter starting with a wildcard does not match topics starting with $).
func TopicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}
