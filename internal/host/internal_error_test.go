package host

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/testlog"
)

// brokenInstance fails every invocation with an error of no known origin,
// as a bug in the host's own code would.
type brokenInstance struct{ done chan struct{} }

var _ pool.Instance = (*brokenInstance)(nil)

func (b *brokenInstance) ID() string            { return "f-1" }
func (b *brokenInstance) Pid() int              { return 1 }
func (b *brokenInstance) Done() <-chan struct{} { return b.done }
func (b *brokenInstance) ExitError() error      { return nil }
func (b *brokenInstance) Stop(context.Context) {
	select {
	case <-b.done:
	default:
		close(b.done)
	}
}
func (b *brokenInstance) Invoke(context.Context, *invoke.Request) (*invoke.Result, error) {
	return nil, errors.New("nil map write in the dispatcher")
}

// An error that is not an *invoke.Error is the host's, never the
// function's: Host.Invoke turns it into InternalError, whose message points
// at the log record, and logs the cause at error level as a host bug.
func TestUnknownErrorIsInternal(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte("isolation: {user: host}\nfunctions:\n  - {name: f, handler: a.b, codedir: .}\n"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	h, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	p := pool.New(pool.Options{Function: "f", Concurrency: 1, Queue: 1, Max: 1, Log: h.log,
		Start: func(context.Context, string) (pool.Instance, error) {
			return &brokenInstance{done: make(chan struct{})}, nil
		}})
	defer p.Close(context.Background())
	h.fns["f"].pool = p

	_, err = h.Invoke(context.Background(), &invoke.Request{ID: "inv-7", Function: "f", Trigger: invoke.TriggerInvoke})
	var ie *invoke.Error
	if !errors.As(err, &ie) || ie.Kind != invoke.KindInternal || ie.Type != "InternalError" || !strings.Contains(ie.Message, "inv-7") {
		t.Fatalf("got %#v, want an InternalError naming invocation inv-7", err)
	}
	if invoke.Outcome(err) != "InternalError" {
		t.Errorf("outcome %q, want InternalError", invoke.Outcome(err))
	}
	var bug string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "internal error: a host bug") {
			bug = line
		}
	}
	if !strings.Contains(bug, "level=ERROR") || !strings.Contains(bug, "invocation=inv-7") || !strings.Contains(bug, "nil map write in the dispatcher") {
		t.Errorf("no error-level record of the host bug with its invocation and cause:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "function error") {
		t.Errorf("the host's error is logged as the function's:\n%s", logs.String())
	}
}
