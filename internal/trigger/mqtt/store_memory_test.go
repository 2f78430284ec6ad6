package mqtt_test

import (
	"bytes"
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// storeHeapBound is the most Go heap an open store may hold: its memtable
// (storeMemTable, 1 MiB, is a skiplist arena of about 1.3 MiB) and badger's
// caches. It was 21 MiB with 16 MiB memtables.
const storeHeapBound = 4 << 20

// liveHeap is the Go heap's live bytes after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A broker that opens an existing store holds a few MiB of heap for it, not
// a database's worth: an idle host's memory budget has room for it.
func TestBrokerStoreHeap(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	connect(t, b.URL(), "sub", false).subscribe(t, "s/t")
	b.Close()

	before := liveHeap()
	b = storeBroker(t, dir)
	after := liveHeap()
	runtime.KeepAlive(b)
	if after > before && after-before > storeHeapBound {
		t.Fatalf("the open store holds %.1f MiB of heap, want at most %.1f MiB", float64(after-before)/(1<<20), float64(storeHeapBound)/(1<<20))
	}
}

// sysTicks counts the broker's $SYS ticks; the hooks before it (the store)
// have had each tick when it counts it.
type sysTicks struct {
	mochi.HookBase
	n atomic.Int64
}

func (s *sysTicks) ID() string                   { return "sys-ticks" }
func (s *sysTicks) Provides(b byte) bool         { return b == mochi.OnSysInfoTick }
func (s *sysTicks) OnSysInfoTick(_ *system.Info) { s.n.Add(1) }

// The store does not write the broker's $SYS information, which mochi gives
// it every second and never reads back: an idle broker writes nothing.
func TestBrokerStoreSkipsSysInfo(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	connect(t, b.URL(), "sub", false).subscribe(t, "s/t") // the store is open and written
	ticks := &sysTicks{}
	if err := mqtt.AddHook(b, ticks); err != nil {
		t.Fatal(err)
	}
	hosttest.WaitFor(t, 10*time.Second, "two $SYS ticks", func() bool { return ticks.n.Load() >= 2 })
	b.Close()

	db, err := badgerdb.Open(badgerdb.DefaultOptions(dir).WithMemTableSize(1 << 20).WithValueThreshold(64 << 10).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []string
	err = db.View(func(txn *badgerdb.Txn) error {
		it := txn.NewIterator(badgerdb.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, string(it.Item().Key()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("the store holds nothing: want the session and its subscription")
	}
	for _, k := range keys {
		if k == "SYS" {
			t.Fatalf("the store holds the $SYS information (keys %q)", keys)
		}
	}
}

// A message larger than a memtable's share for one record goes to badger's
// value log; it is held for its session across a restart like any other.
func TestBrokerStoreBigMessage(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	sub := connect(t, b.URL(), "sub", true)
	sub.subscribe(t, "s/t")
	sub.leave(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
	pub := connect(t, b.URL(), "pub", true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := pub.c.Publish(ctx, &paho.Publish{Topic: "s/t", QoS: 1, Payload: big}); err != nil || resp.ReasonCode != 0 {
		t.Fatalf("publish 200 KiB: %+v, %v", resp, err)
	}
	b.Close()

	b = storeBroker(t, dir)
	sub = connect(t, b.URL(), "sub", false)
	hosttest.WaitFor(t, 10*time.Second, "the 200 KiB message held for the session", func() bool { return len(sub.received()) >= 1 })
	if got := sub.received(); len(got) != 1 || got[0] != string(big) {
		t.Fatalf("after a restart the session got %d messages (first %d bytes), want the 200 KiB message once", len(got), len(got[0]))
	}
}
