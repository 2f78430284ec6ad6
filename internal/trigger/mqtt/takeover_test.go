package mqtt_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// A QoS 1 message that arrives while a client takes its session over (a
// trigger reconnecting, or connecting to the session it had before polyfn
// restarted) is not lost: it is in the session the new connection gets,
// sent to it, and in the store. Publishers keep publishing while a client
// takes its session over again and again, acknowledging nothing; then a
// last connection acknowledges everything it is sent, and it must be sent
// every message the broker acknowledged to the publishers. The same with a
// store and without (mqtt.persist: false).
func TestBrokerTakeoverLosesNothing(t *testing.T) {
	t.Run("store", func(t *testing.T) { takeoverRun(t, storeBroker(t, t.TempDir())) })
	t.Run("memory", func(t *testing.T) {
		b, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		takeoverRun(t, b)
	})
}

func takeoverRun(t *testing.T, b *mqtt.Broker) {
	const id, topic = "taker", "takeover/in"
	s := connect(t, b.URL(), id, true)
	s.subscribe(t, topic)
	s.leave(t)

	var acked sync.Map
	var nacked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 4 {
		conn, err := net.Dial("tcp", hostOf(t, b.URL()))
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: "takeover-pub-" + strconv.Itoa(p), Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "takeover-pub-" + strconv.Itoa(p), CleanStart: true, KeepAlive: 30})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					payload := fmt.Sprintf("p%d-%d-%d", p, w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
					cancel()
					if err != nil {
						return
					}
					acked.Store(payload, true)
					nacked.Add(1)
				}
			}()
		}
	}
	// Take the session over again and again while messages arrive: each
	// connection acknowledges nothing, so the session's messages pile up
	// and go to each new connection.
	takeovers := 0
	for ; takeovers < 60 || nacked.Load() < 1000 && takeovers < 5000; takeovers++ {
		conn, err := net.Dial("tcp", hostOf(t, b.URL()))
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, EnableManualAcknowledgment: true,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) { return true, nil }}})
		expiry := uint32(3600)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		<-c.Done()
	}
	close(stop)
	wg.Wait()
	if nacked.Load() < 1000 {
		t.Fatalf("only %d messages were published during %d take-overs", nacked.Load(), takeovers)
	}

	last := connect(t, b.URL(), id, false)
	missing := func() []string {
		got := map[string]bool{}
		for _, m := range last.received() {
			got[m] = true
		}
		var out []string
		acked.Range(func(k, _ any) bool {
			if !got[k.(string)] {
				out = append(out, k.(string))
			}
			return true
		})
		return out
	}
	for deadline := time.Now().Add(30 * time.Second); len(missing()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if m := missing(); len(m) > 0 {
		slices.Sort(m)
		t.Fatalf("%d of %d acknowledged messages never reached the session, such as %v", len(m), nacked.Load(), m[:min(len(m), 5)])
	}
	t.Logf("%d messages published across %d take-overs: all sent to the session", nacked.Load(), takeovers)
}

func hostOf(t *testing.T, brokerURL string) string {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
