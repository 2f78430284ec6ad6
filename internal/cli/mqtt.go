package cli

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// mqttService is the MQTT side of polyfn serve: the embedded broker, when
// on, and the trigger, when there is a broker to connect to. Both live as
// long as the process; a reload hands the trigger the new rules.
type mqttService struct {
	cfg      config.MQTT // as started: changes take effect on restart
	stateDir string      // as started
	broker   *mqtttrigger.Broker
	trigger  *mqtttrigger.Trigger
	log      *slog.Logger
}

// brokerStore is the embedded broker's store under the state directory.
const brokerStore = "mqtt"

// startMQTT starts the embedded broker (unless mqtt.embedded is false), with
// its store under the state directory unless mqtt.persist is false, and
// prepares the trigger; current returns the configuration invocations go to.
func startMQTT(cfg *config.Config, log *slog.Logger, current func() mqtttrigger.Invoker) (*mqttService, error) {
	s := &mqttService{cfg: cfg.MQTT, stateDir: cfg.StateDir, log: log}
	embeddedURL := ""
	if cfg.MQTT.EmbeddedEnabled() {
		o := mqtttrigger.BrokerOptions{Listen: cfg.MQTT.Listen}
		if cfg.MQTT.PersistEnabled() {
			if cfg.StateDir == "" {
				return nil, errors.New("state_dir: there is no default state directory (no home directory): set state_dir or --state-dir for the embedded MQTT broker's store, or mqtt.persist: false")
			}
			o.Store = filepath.Join(cfg.StateDir, brokerStore)
		}
		b, err := mqtttrigger.StartBroker(o, log)
		if err != nil {
			return nil, err
		}
		s.broker, embeddedURL = b, b.URL()
		store := b.Store()
		if store == "" {
			store = "none (mqtt.persist: false): sessions in memory only"
		}
		log.Info("mqtt broker listening", "listen", b.Addr(), "store", store)
	}
	if cfg.MQTT.Broker == "" && s.broker == nil {
		if hasMQTTRules(cfg) {
			return nil, errors.New("functions have triggers.mqtt rules, but mqtt.embedded is false and mqtt.broker is not set: there is no broker to subscribe to")
		}
		return s, nil
	}
	o, err := mqtttrigger.ClientOptions(cfg.MQTT, embeddedURL, log)
	if err == nil {
		s.trigger, err = mqtttrigger.New(o, current)
	}
	if err != nil {
		s.closeBroker()
		return nil, err
	}
	return s, nil
}

// update gives the trigger the rules of the configuration h runs.
func (s *mqttService) update(cfg *config.Config, h *host.Host) {
	if !reflect.DeepEqual(cfg.MQTT, s.cfg) {
		s.log.Warn("reload: the mqtt section changed; it takes effect on restart (the functions' triggers.mqtt rules are reloaded)")
	}
	if cfg.StateDir != s.stateDir {
		s.log.Warn("reload: state_dir changed; it takes effect on restart", "state_dir", s.stateDir, "config", cfg.StateDir)
	}
	if s.trigger == nil {
		if hasMQTTRules(cfg) {
			s.log.Error("reload: functions have triggers.mqtt rules, but polyfn started without a broker; they are ignored until restart")
		}
		return
	}
	s.trigger.Update(cfg, h.Metrics().Registry)
}

// closeTrigger stops reading messages, lets those being handled finish and
// be acknowledged until ctx is done, and disconnects.
func (s *mqttService) closeTrigger(ctx context.Context) {
	if s.trigger != nil {
		s.trigger.Close(ctx)
	}
}

func (s *mqttService) closeBroker() {
	if s.broker != nil {
		s.broker.Close()
	}
}

func hasMQTTRules(cfg *config.Config) bool {
	for _, f := range cfg.Functions {
		if len(f.Triggers.MQTT) > 0 {
			return true
		}
	}
	return false
}
