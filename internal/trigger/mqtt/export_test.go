package mqtt

import (
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
)

// SetTimeouts sets the retire timeout and the bound of one SUBSCRIBE of a
// trigger that has no rules yet.
func SetTimeouts(t *Trigger, retire, subscribe time.Duration) {
	t.retireTimeout, t.subscribeTimeout = retire, subscribe
}

// ClientIDFor is the client id of the session of filter.
func ClientIDFor(o Options, filter string) string { return o.clientIDFor(filter) }

// Retiring is how many filters are being retired.
func Retiring(t *Trigger) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.retiring)
}

// AddHook adds h to the embedded broker, after its own hooks.
func AddHook(b *Broker, h mochi.Hook) error { return b.srv.AddHook(h, nil) }

// StoredMessages is how many messages held for client the broker's store
// has, written or being deleted.
func StoredMessages(b *Broker, client string) int {
	b.store.mu.Lock()
	defer b.store.mu.Unlock()
	n := 0
	for _, m := range []map[string]struct{}{b.store.stored, keys(b.store.doomed), keys(b.store.deleting)} {
		for k := range m {
			if strings.HasPrefix(k, client+":") {
				n++
			}
		}
	}
	return n
}

func keys[V any](m map[string]V) map[string]struct{} {
	out := map[string]struct{}{}
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}

// BreakStore closes the database of the broker's store under it: every
// write fails from then on.
func BreakStore(b *Broker) {
	b.store.open()
	_ = b.store.Hook.Stop()
}

// StoreOpen reports whether the database of the broker's store is open.
func StoreOpen(b *Broker) bool { return b.store.isOpen.Load() }

// MemTableFor is the memtable size the store in dir opens with.
func MemTableFor(dir string) int64 { return memTableFor(dir) }
