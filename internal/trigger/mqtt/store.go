package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The embedded broker's store.
//
// mochi's storage hooks write what a hook event tells them: sessions
// (OnSessionEstablished, OnDisconnect), subscriptions (OnSubscribed),
// retained messages (OnRetainMessage) and each QoS 1 and 2 message a
// session holds (OnQosPublish when the broker takes it for a subscriber,
// connected or not; OnQosComplete when the subscriber acknowledged it). At
// start the server reads them back (readStore, before any listener accepts),
// and a client that reconnects to its session is sent its stored messages
// again (ResendInflightMessages). polyfn uses mochi's badger hook, the one
// mochi maintains (its bolt hook is deprecated, and in v2.7.9 it stores
// messages without their packet identifier, so that all of a session's
// messages come back as one), with synchronous writes: each write is on disk
// (fsync) before the hook returns.
//
// The order (each message stored for its subscribers before its PUBACK)
// is fanout's: it hands each inbound QoS 1 message to the sessions itself
// (fanout.go).
//
// The rest of store keeps the writes to those that matter:
//   - the PUBACK mochi records (OnQosPublish) and removes (OnQosComplete)
//     around writing it, for every inbound QoS 1 message, is not written: it
//     is gone before it could be of use;
//   - a message already stored is not written again when it is resent;
//   - the deletion of a message its subscriber acknowledged waits for no
//     one: a few deleters do them, badger commits theirs together, and a
//     deletion that a kill cuts short costs a duplicate, never a loss (a
//     new message under the same packet identifier cancels or waits for the
//     deletion of the old one);
//   - when a session is taken over by a new connection (a client
//     reconnecting, polyfn's trigger after a restart), mochi drops the old
//     connection's messages (OnQosDropped) after giving them to the new one,
//     whose records have the same keys: they are kept.
//
// A store whose directory holds no database yet (a new state directory,
// or a broker no client ever connected to) opens its database at the
// first write (open): the first client's connection, subscription,
// retained message or QoS message, which waits for it. Until then the
// broker has nothing to persist and the host holds none of badger's memory
// (its memtable, caches and goroutines); deletions of what was never
// written do nothing. A store that holds a database opens it at start, to
// read it back.
type store struct {
	*badger.Hook
	dir  string
	lock *os.File
	srv  *mochi.Server
	log  *slog.Logger

	// lazy is set when the directory held no database at start: the
	// database opens at the first write. opts are the hook's options, kept
	// by Init for open.
	lazy bool
	opts *badger.Options
	// isOpen is set once the database is open; openMu serialises opening
	// it, and closed (under openMu) is set by Stop, after which it does
	// not open.
	isOpen atomic.Bool
	openMu sync.Mutex
	closed bool

	// failures counts the errors the storage hook reported, and lastFailure
	// is the latest. mochi's storage hooks report a failed write only by
	// logging it at level error, through the logger they were given
	// (SetOpts): store gives them one that counts.
	failures    atomic.Uint64
	lastFailure atomic.Pointer[string]
	// sessions are the ids of the stored sessions the server restores at
	// start (StoredClients); the subscriptions and messages of others are
	// deleted as they are read back. Nil until then.
	sessions map[string]bool

	mu sync.Mutex
	// changed is signalled (on mu) when a deletion is queued or done, and
	// when the store stops.
	changed *sync.Cond
	// stored holds the keys (client id:packet id) of the QoS messages in the
	// store, so that resends are not written again and messages never
	// written are not deleted.
	stored map[string]struct{}
	// doomed are the messages to delete, by key, until a deleter takes them,
	// in the order of queue; deleting holds the keys being deleted.
	doomed   map[string]doom
	queue    []string
	deleting map[string]bool
	stopping bool
	deleters sync.WaitGroup
}

// doom is a message to delete: its session's client and its packet.
type doom struct {
	cl *mochi.Client
	pk packets.Packet
}

// Store settings. Badger's defaults are sized for a database; these are for
// the sessions of a broker: a few small records per message, most deleted
// within milliseconds.
//
// A memtable is one Go allocation of about 1.3 times storeMemTable (badger's
// skiplist arena), made when the store opens. An idle broker writes nothing
// into it, so its pages stay untouched, but when the Go runtime places it
// over memory the heap used before (the check at start, verify, opens and
// closes a database of its own just before), it clears the whole arena and
// every page of it becomes resident: with 16 MiB memtables that was 21 MiB
// of an idle host's RSS in some starts (docs/performance.md).
// At 1 MiB a memtable holds some 1,500 messages (each written and then
// deleted) before badger flushes it to a table in the background.
const (
	storeMemTable  = 1 << 20 // bytes of one memtable
	storeMemTables = 2       // memtables held before writes wait for a flush
	// storeValueThreshold: a record this size or larger (a message with a
	// big payload) is written to the value log instead of the memtable,
	// synchronously too. Badger requires it to be at most 15 % of
	// storeMemTable.
	storeValueThreshold = 64 << 10
	storeBlockCache     = 8 << 20  // bytes of cached table blocks
	storeValueLogFile   = 64 << 20 // bytes of one value log file
	storeGCInterval     = 5 * time.Minute
	storeDeleters       = 4 // goroutines deleting acknowledged messages
	// storeLockFile, in the store's directory, is held (flock) by the polyfn
	// process that has the store open, and names its pid.
	storeLockFile = "polyfn.lock"
)

// storeRefused is the reason code of the PUBACK that refuses a message the
// store could not write.
var storeRefused = packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "the broker could not store the message"}

// openStore locks dir (creating it) for this process and prepares the
// hook; the database opens when the hook is added to srv.
func openStore(dir string, srv *mochi.Server, log *slog.Logger) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mqtt store: %w", err)
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	empty, err := holdsNothing(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("mqtt store: %w", err)
	}
	s := &store{Hook: new(badger.Hook), dir: dir, lock: lock, srv: srv, log: log, lazy: empty,
		stored: map[string]struct{}{}, doomed: map[string]doom{}, deleting: map[string]bool{}}
	s.changed = sync.NewCond(&s.mu)
	return s, nil
}

// holdsNothing reports whether dir holds no file but the store's lock file:
// no database was ever opened there.
func holdsNothing(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.Name() != storeLockFile {
			return false, nil
		}
	}
	return true, nil
}

// lockStore takes the store's lock file: an exclusive flock held until the
// process closes it or dies. A store that another process holds is an
// error naming it and that process.
func lockStore(dir string) (*os.File, error) {
	path := filepath.Join(dir, storeLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mqtt store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
			owner = "process " + strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("mqtt store %s is in use by %s (another polyfn serve?): give each host its own state directory (state_dir, --state-dir), or set mqtt.persist: false", dir, owner)
		}
		return nil, fmt.Errorf("mqtt store %s: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// verify opens the store on its own and checks the checksums of all its
// tables, which badger does not do when it opens a store: a corrupt table
// would read as holding nothing, and its messages would be lost without a
// word. An error names what failed.
func (s *store) verify() (err error) {
	o := *s.options().Options
	db, err := badgerdb.Open(o.WithLogger(nil))
	if err != nil {
		return err
	}
	defer func() {
		// badger v4.9.6 dereferences a nil block when a table cannot be read
		// at all, instead of returning the error.
		if r := recover(); r != nil {
			err = fmt.Errorf("one of its tables (*.sst) cannot be read: %v", r)
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	return db.VerifyChecksum()
}

// failed returns the storage hook's errors since it had reported n.
func (s *store) failed(n uint64) error {
	if s.failures.Load() == n {
		return nil
	}
	last := "an error"
	if p := s.lastFailure.Load(); p != nil {
		last = *p
	}
	return fmt.Errorf("%d errors, the last: %s", s.failures.Load()-n, last)
}

// options are the badger hook's settings for dir.
func (s *store) options() *badger.Options {
	o := badgerdb.DefaultOptions(s.dir).
		WithSyncWrites(true). // the message is on disk before its PUBACK
		WithMetricsEnabled(false).
		WithMemTableSize(memTableFor(s.dir)).
		WithValueThreshold(storeValueThreshold).
		WithNumMemtables(storeMemTables).
		WithBlockCacheSize(storeBlockCache).
		WithValueLogFileSize(storeValueLogFile).
		WithNumCompactors(2).
		WithVerifyValueChecksum(true)
	return &badger.Options{Path: s.dir, Options: &o, GcInterval: int64(storeGCInterval / time.Second)}
}

// memTableFor is the memtable size to open the database in dir with:
// storeMemTable, or more when dir holds a memtable that a process with
// larger memtables (polyfn before they were 1 MiB: 16 MiB) left unflushed,
// being killed. Badger replays each such memtable (*.mem) into one of the
// size it opens with, and panics when it does not fit. A memtable file is
// twice its memtable's size; one that holds no record is deleted at open.
func memTableFor(dir string) int64 {
	size := int64(storeMemTable)
	files, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Size()/2 > size && holdsRecords(f) {
			size = st.Size() / 2
		}
	}
	return size
}

// holdsRecords reports whether the memtable file at path holds a record:
// badger writes them one after the other after a 20-byte header, into a
// file of zeros. When it cannot tell, it says yes.
func holdsRecords(path string) bool {
	const header = 20
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.ReadAt(b, header)
	if err != nil && !errors.Is(err, io.EOF) {
		return true
	}
	for _, c := range b[:n] {
		if c != 0 {
			return true
		}
	}
	return false
}

// ID names the hook in mochi's log records.
func (s *store) ID() string { return "mqtt-store" }

// Provides is the badger hook's events but the $SYS information: mochi
// gives it to the hook every second (OnSysInfoTick), the hook writes it
// (an fsync a second, and a record a second into the memtable, idle or
// not), and mochi reads it back only with its RestoreSysInfoOnRestart
// compatibility option, which polyfn leaves off.
func (s *store) Provides(b byte) bool {
	if b == mochi.OnSysInfoTick || b == mochi.StoredSysInfo {
		return false
	}
	return s.Hook.Provides(b)
}

// SetOpts gives the storage hook a logger that counts its errors.
func (s *store) SetOpts(l *slog.Logger, o *mochi.HookOptions) {
	s.Hook.SetOpts(slog.New(countErrors{h: l.Handler(), n: &s.failures, last: &s.lastFailure}), o)
}

// Init opens the database, unless the store is lazy, and starts the
// deleters.
func (s *store) Init(config any) error {
	o, ok := config.(*badger.Options)
	if !ok {
		return mochi.ErrInvalidConfigType
	}
	s.opts = o
	if !s.lazy {
		if err := s.Hook.Init(o); err != nil {
			return err
		}
		s.isOpen.Store(true)
	}
	for range storeDeleters {
		s.deleters.Add(1)
		go s.delete()
	}
	return nil
}

// Stop lets the deleters finish the queued deletions, closes the database
// and releases the lock.
func (s *store) Stop() error {
	s.mu.Lock()
	s.stopping = true
	s.changed.Broadcast()
	s.mu.Unlock()
	s.deleters.Wait()
	s.openMu.Lock()
	s.closed = true
	s.openMu.Unlock()
	var err error
	if s.isOpen.Load() {
		err = s.Hook.Stop()
	}
	s.lock.Close()
	return err
}

// open opens the database if it is not open yet, and reports whether it is
// open. An error is logged at level error, through the hook's logger, so
// that it counts as a failed write (a QoS message is refused).
func (s *store) open() bool {
	if s.isOpen.Load() {
		return true
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.isOpen.Load() {
		return true
	}
	if s.closed {
		s.Hook.Log.Error("mqtt store: written after it was closed", "store", s.dir)
		return false
	}
	if err := s.Hook.Init(s.opts); err != nil {
		s.Hook.Log.Error("mqtt store: cannot open the database", "store", s.dir, "error", err)
		return false
	}
	s.isOpen.Store(true)
	return true
}

// opened reports whether the database is open, after an opening under way.
// A deletion on a store that is not open has nothing to delete.
func (s *store) opened() bool {
	if s.isOpen.Load() {
		return true
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	return s.isOpen.Load()
}

// The events that write open the database first.

func (s *store) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	if s.open() {
		s.Hook.OnSessionEstablished(cl, pk)
	}
}

func (s *store) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	if s.open() {
		s.Hook.OnWillSent(cl, pk)
	}
}

func (s *store) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	if s.open() {
		s.Hook.OnDisconnect(cl, err, expire)
	}
}

func (s *store) OnSubscribed(cl *mochi.Client, pk packets.Packet, reasonCodes []byte) {
	if s.open() {
		s.Hook.OnSubscribed(cl, pk, reasonCodes)
	}
}

func (s *store) OnRetainMessage(cl *mochi.Client, pk packets.Packet, r int64) {
	if s.open() {
		s.Hook.OnRetainMessage(cl, pk, r)
	}
}

// The events that only delete do nothing on a store that is not open.

func (s *store) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	if s.opened() {
		s.Hook.OnUnsubscribed(cl, pk)
	}
}

func (s *store) OnClientExpired(cl *mochi.Client) {
	if s.opened() {
		s.Hook.OnClientExpired(cl)
	}
}

func (s *store) OnRetainedExpired(filter string) {
	if s.opened() {
		s.Hook.OnRetainedExpired(filter)
	}
}

// OnQosPublish stores a message a session holds, unless it is stored
// already or is the acknowledgement of an inbound QoS 1 message.
func (s *store) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback {
		return
	}
	key := storeKey(cl.ID, pk.PacketID)
	s.mu.Lock()
	if _, ok := s.stored[key]; ok {
		s.mu.Unlock()
		return
	}
	// The packet identifier was freed and taken again: the old message's
	// record is overwritten, and must not be deleted after that.
	delete(s.doomed, key)
	for s.deleting[key] {
		s.changed.Wait()
	}
	s.mu.Unlock()
	failures := s.failures.Load()
	if !s.open() {
		return
	}
	s.Hook.OnQosPublish(cl, pk, sent, resends)
	if s.failures.Load() == failures {
		s.mu.Lock()
		s.stored[key] = struct{}{}
		s.mu.Unlock()
	}
}

// OnQosComplete deletes a message its subscriber acknowledged.
func (s *store) OnQosComplete(cl *mochi.Client, pk packets.Packet) { s.doom(cl, pk) }

// OnQosDropped deletes a message the broker gave up (expired, or its
// session ended), but not those of a connection whose session was taken
// over: the new connection has them, under the same keys.
func (s *store) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		s.doom(cl, pk)
	}
}

// doom queues the deletion of a message, if it is in the store.
func (s *store) doom(cl *mochi.Client, pk packets.Packet) {
	key := storeKey(cl.ID, pk.PacketID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.stored[key]; !ok {
		return
	}
	delete(s.stored, key)
	s.doomed[key] = doom{cl: cl, pk: pk}
	s.queue = append(s.queue, key)
	s.changed.Signal()
}

// delete is a deleter: it deletes the queued messages until the store
// stops and the queue is empty.
func (s *store) delete() {
	defer s.deleters.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for len(s.queue) == 0 && !s.stopping {
			s.changed.Wait()
		}
		if len(s.queue) == 0 {
			return
		}
		key := s.queue[0]
		s.queue = s.queue[1:]
		d, ok := s.doomed[key]
		if !ok {
			continue // a new message took the key
		}
		delete(s.doomed, key)
		s.deleting[key] = true
		s.mu.Unlock()
		s.Hook.OnQosComplete(d.cl, d.pk)
		s.mu.Lock()
		delete(s.deleting, key)
		s.changed.Broadcast()
	}
}

// StoredClients returns the stored sessions. The hook does not store
// whether an MQTT 5 session expiry was given, without which a restored
// session would never expire: a session with an expiry had one.
func (s *store) StoredClients() ([]storage.Client, error) {
	s.sessions = map[string]bool{}
	if !s.isOpen.Load() {
		return nil, nil // lazy: nothing stored
	}
	v, err := s.Hook.StoredClients()
	for i := range v {
		c := &v[i]
		if c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval > 0 {
			c.Properties.SessionExpiryIntervalFlag = true
		}
		// The server restores the sessions that outlive a disconnection
		// (loadClients); it deletes the others, but not what they held.
		if c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval > 0 || c.ProtocolVersion < 5 && !c.Clean {
			s.sessions[c.ID] = true
		}
	}
	return v, err
}

// StoredSubscriptions returns the stored subscriptions of the restored
// sessions and deletes the others.
func (s *store) StoredSubscriptions() ([]storage.Subscription, error) {
	if !s.isOpen.Load() {
		return nil, nil
	}
	v, err := s.Hook.StoredSubscriptions()
	if err != nil || s.sessions == nil {
		return v, err
	}
	kept := v[:0]
	for _, sub := range v {
		if s.sessions[sub.Client] {
			kept = append(kept, sub)
			continue
		}
		s.Hook.OnUnsubscribed(s.srv.NewClient(nil, "", sub.Client, true), packets.Packet{Filters: packets.Subscriptions{{Filter: sub.Filter}}})
	}
	return kept, nil
}

// StoredInflightMessages returns the stored messages of the restored
// sessions, notes their keys, and deletes the others.
func (s *store) StoredInflightMessages() ([]storage.Message, error) {
	if !s.isOpen.Load() {
		return nil, nil
	}
	v, err := s.Hook.StoredInflightMessages()
	if err != nil {
		return v, err
	}
	kept := v[:0]
	for _, m := range v {
		if s.sessions != nil && !s.sessions[m.Client] {
			s.Hook.OnQosDropped(s.srv.NewClient(nil, "", m.Client, true), packets.Packet{PacketID: m.PacketID})
			continue
		}
		kept = append(kept, m)
	}
	s.mu.Lock()
	for _, m := range kept {
		s.stored[storeKey(m.Client, m.PacketID)] = struct{}{}
	}
	s.mu.Unlock()
	return kept, nil
}

// StoredRetainedMessages returns the stored retained messages.
func (s *store) StoredRetainedMessages() ([]storage.Message, error) {
	if !s.isOpen.Load() {
		return nil, nil
	}
	return s.Hook.StoredRetainedMessages()
}

func storeKey(client string, id uint16) string {
	return client + ":" + strconv.Itoa(int(id))
}

// countErrors passes records on to h and counts those at level error,
// whether h keeps them or not, keeping the last in last.
type countErrors struct {
	h    slog.Handler
	n    *atomic.Uint64
	last *atomic.Pointer[string]
}

func (c countErrors) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || c.h.Enabled(ctx, l)
}

func (c countErrors) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		c.last.Store(&msg)
		c.n.Add(1)
	}
	if !c.h.Enabled(ctx, r.Level) {
		return nil
	}
	return c.h.Handle(ctx, r)
}

func (c countErrors) WithAttrs(a []slog.Attr) slog.Handler {
	return countErrors{h: c.h.WithAttrs(a), n: c.n, last: c.last}
}

func (c countErrors) WithGroup(name string) slog.Handler {
	return countErrors{h: c.h.WithGroup(name), n: c.n, last: c.last}
}
