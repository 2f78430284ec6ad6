package mqtt_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
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

// storeFiles lists the files in a store's directory.
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// A new store opens its database at the first write, not at start: a
// broker no client connects to holds none of badger's memory and leaves
// only its lock file. What the first client writes is kept like any other.
func TestBrokerStoreOpensAtFirstWrite(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	if mqtt.StoreOpen(b) {
		t.Fatal("a new store's database is open before anything was written")
	}
	b.Close()
	if got := storeFiles(t, dir); !slices.Equal(got, []string{"polyfn.lock"}) {
		t.Fatalf("a broker no client connected to left %q in its store, want only polyfn.lock", got)
	}

	b = storeBroker(t, dir)
	if mqtt.StoreOpen(b) {
		t.Fatal("the database of a store that holds nothing is open at start")
	}
	sub := connect(t, b.URL(), "sub", true)
	hosttest.WaitFor(t, 10*time.Second, "the store's database to open for the session", func() bool { return mqtt.StoreOpen(b) })
	sub.subscribe(t, "s/t")
	sub.leave(t)
	pub := mqtttest.NewClient(t, b.URL())
	publishN(t, pub, "s/t", 0, 3)
	b.Close()
	if got := storeFiles(t, dir); !slices.Contains(got, "MANIFEST") {
		t.Fatalf("the store holds %q after a session was written, want a database (MANIFEST)", got)
	}

	b = storeBroker(t, dir)
	if !mqtt.StoreOpen(b) {
		t.Fatal("the database of a store that holds a session is not open at start")
	}
	sub = connect(t, b.URL(), "sub", false)
	hosttest.WaitFor(t, 10*time.Second, "the messages held for the session", func() bool { return len(sub.received()) >= 3 })
	// The broker resends a session's held messages in no set order.
	got := sub.received()
	slices.Sort(got)
	if !slices.Equal(got, names(0, 3)) {
		t.Fatalf("after a restart the session got %v, want m0 to m2 once each", got)
	}
}

// A new store whose database cannot be opened at the first write refuses
// the QoS 1 messages it cannot keep, as one that fails to write them.
func TestBrokerStoreCannotOpen(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	// badger cannot create its manifest where a directory is.
	if err := os.Mkdir(filepath.Join(dir, "MANIFEST"), 0o700); err != nil {
		t.Fatal(err)
	}
	sub := connect(t, b.URL(), "sub", true)
	sub.subscribe(t, "s/t")
	pub := connect(t, b.URL(), "pub", true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pub.c.Publish(ctx, &paho.Publish{Topic: "s/t", QoS: 1, Payload: []byte("m0")})
	if err == nil || resp == nil || resp.ReasonCode != packets.ErrUnspecifiedError.Code {
		t.Fatalf("publish with a store that cannot open: got %+v, %v; want a PUBACK with reason 0x80", resp, err)
	}
	if mqtt.StoreOpen(b) {
		t.Fatal("the store reports its database open")
	}
}

// Records the killed-store role writes: retained messages, more than one
// of today's memtables holds.
const (
	killedRecords = 600
	killedPayload = 4 << 10
)

// killedStore plays a process that stored killedRecords retained messages
// in dir with 16 MiB memtables (polyfn's before they were 1 MiB) and was
// killed before its memtable was flushed: it exits without closing.
func killedStore(dir string) {
	db, err := badgerdb.Open(badgerdb.DefaultOptions(dir).WithMemTableSize(16 << 20).WithSyncWrites(true).WithLogger(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	payload := bytes.Repeat([]byte("p"), killedPayload)
	for i := range killedRecords {
		topic := fmt.Sprintf("k/%d", i)
		m := storage.Message{ID: storage.RetainedKey + "_" + topic, T: storage.RetainedKey, TopicName: topic, Payload: payload,
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, Created: time.Now().Unix()}
		data, _ := m.MarshalBinary()
		if err := db.Update(func(txn *badgerdb.Txn) error { return txn.Set([]byte(m.ID), data) }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(0)
}

// A store that an older polyfn, with 16 MiB memtables, left with an
// unflushed memtable (killed) opens: badger replays that memtable into one
// of the size it was written with, and the messages in it are kept.
func TestBrokerStoreOlderMemtable(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POLYFN_MQTT_TEST_ROLE=killed-store", "DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the killed store: %v: %s", err, out)
	}
	if got := mqtt.MemTableFor(dir); got != 16<<20 {
		t.Fatalf("with the older memtable the store opens with %d-byte memtables, want 16 MiB", got)
	}
	b := storeBroker(t, dir)
	r := mqtttest.NewClient(t, b.URL(), "k/#")
	r.WaitFor(t, 10*time.Second, "the retained messages of the older store", func(m []mqtttest.Message) bool { return len(m) >= killedRecords })
	for _, m := range r.Messages() {
		if len(m.Payload) != killedPayload {
			t.Fatalf("retained message %s has %d bytes, want %d", m.Topic, len(m.Payload), killedPayload)
		}
	}
	b.Close()
	// Closed, the store flushed it: the next start has 1 MiB memtables.
	if got := mqtt.MemTableFor(dir); got != 1<<20 {
		t.Fatalf("after a clean close the store opens with %d-byte memtables, want 1 MiB", got)
	}
}
