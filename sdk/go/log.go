package polyfn

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Logger returns a logger for the invocation of ctx. Its records reach the
// host tagged with the function and the invocation id: in stream mode as
// RpcLog messages (category User) on the stream, in call mode as JSON lines
// on stderr ({"level", "msg", "function", "invocation_id", "source"}). A
// record's attributes are appended to its message as key=value.
//
// Outside an invocation (a ctx that carries none) the records go to stderr
// untagged. Records logged by goroutines a handler started, after it has
// returned, are still tagged with its invocation.
func Logger(ctx context.Context) *slog.Logger {
	inv := invocationFrom(ctx)
	if inv == nil {
		return slog.New(&logHandler{sink: defaultSink()})
	}
	h := &logHandler{sink: inv.sink}
	if inv.info != nil {
		h.function, h.invocationID = inv.info.FunctionName, inv.info.InvocationID
	}
	return slog.New(h)
}

// logRecord is one log record on its way to the host.
type logRecord struct {
	level        slog.Level
	msg          string
	function     string // empty when not known
	invocationID string // empty outside an invocation
	runtime      bool   // the SDK's own message (source "runtime"), else the function's ("user")
}

// logSink is where log records go. emit may be called from any goroutine.
type logSink interface {
	emit(r logRecord)
}

// lineSink writes records as JSON lines, one Write per line, in the format
// of polyfn's runtimes (docs/protocols.md, "Worker output and log lines").
type lineSink struct {
	mu sync.Mutex
	w  io.Writer
}

var (
	stderrOnce sync.Once
	stderrSink *lineSink
)

// defaultSink is the process's stderr.
func defaultSink() logSink {
	stderrOnce.Do(func() { stderrSink = &lineSink{w: os.Stderr} })
	return stderrSink
}

// jsonLine is the shape of one line; the field order is the Python runtime's.
type jsonLine struct {
	Level        string `json:"level"`
	Msg          string `json:"msg"`
	Function     string `json:"function,omitempty"`
	InvocationID string `json:"invocation_id,omitempty"`
	Source       string `json:"source"`
}

func (s *lineSink) emit(r logRecord) {
	line, err := json.Marshal(jsonLine{
		Level:        levelName(r.level),
		Msg:          r.msg,
		Function:     r.function,
		InvocationID: r.invocationID,
		Source:       sourceName(r.runtime),
	})
	if err != nil {
		return
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.w.Write(line) // stderr gone: nowhere to report it
}

// levelName maps a slog level to the level names of polyfn's log lines.
func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	case l >= slog.LevelInfo:
		return "info"
	}
	return "debug"
}

func sourceName(runtime bool) string {
	if runtime {
		return "runtime"
	}
	return "user"
}

// runtimeLog writes one of the SDK's own messages.
func runtimeLog(sink logSink, level slog.Level, function, format string, args ...any) {
	sink.emit(logRecord{level: level, msg: fmt.Sprintf(format, args...), function: function, runtime: true})
}

// logHandler is the slog.Handler of [Logger].
type logHandler struct {
	sink         logSink
	function     string
	invocationID string
	attrs        string // attributes from WithAttrs, formatted
	group        string // the open groups, "g1.g2."
}

var _ slog.Handler = (*logHandler)(nil)

// Enabled reports true for every level: the host filters by its own.
func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	h.sink.emit(logRecord{level: r.Level, msg: b.String(), function: h.function, invocationID: h.invocationID})
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	c := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		appendAttr(&b, h.group, a)
	}
	c.attrs = b.String()
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

// appendAttr writes " key=value", groups flattened into dotted keys.
func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			group += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, group, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(quoteIfNeeded(valueText(a.Value)))
}

func valueText(v slog.Value) string {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		return fmt.Sprint(v.Any())
	}
	return v.String()
}

func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == '=' || r == '"' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
