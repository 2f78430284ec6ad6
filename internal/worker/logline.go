package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// record is one parsed line of worker output.
type record struct {
	level      slog.Level
	msg        string
	invocation string
	source     string
	function   string
	logger     string
	exception  string
}

// runtimeLine is the JSON log line polyfn's runtimes write (docs/protocols.md).
type runtimeLine struct {
	Level        string  `json:"level"`
	Msg          *string `json:"msg"`
	Function     string  `json:"function"`
	InvocationID string  `json:"invocation_id"`
	Source       string  `json:"source"`
	Logger       string  `json:"logger"`
	Exception    string  `json:"exception"`
}

// The values of a record's source: who wrote the line.
const (
	// SourceUser is the function's output (print, console.log, its logger).
	SourceUser = "user"
	// SourceRuntime is the worker's own: polyfn's runtimes' log records, an
	// Azure Functions worker's console lines and System logs.
	SourceRuntime = "runtime"
)

// azureConsolePrefix starts the console lines the Azure Functions language
// workers write for themselves (the Azure Functions host reads them the same
// way): "LanguageWorkerConsoleLog INFO: ..." from the Python worker,
// "LanguageWorkerConsoleLog[error] ..." from the Node.js worker.
const azureConsolePrefix = "LanguageWorkerConsoleLog"

// parseLine reads one line of worker output. A JSON record (polyfn's
// runtimes' format) is believed only on stderr, where the runtimes write
// them: on stdout the same text is the function's. Its source is "runtime"
// only when it says so.
func parseLine(line, stream string) record {
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	if stream == "stderr" && strings.HasPrefix(line, "{") {
		var rl runtimeLine
		if json.Unmarshal([]byte(line), &rl) == nil && rl.Msg != nil {
			source := SourceUser
			if rl.Source == SourceRuntime {
				source = SourceRuntime
			}
			return record{
				level:      parseLevel(rl.Level),
				msg:        *rl.Msg,
				invocation: rl.InvocationID,
				source:     source,
				function:   rl.Function,
				logger:     rl.Logger,
				exception:  rl.Exception,
			}
		}
	}
	lvl := slog.LevelInfo
	if stream == "stderr" {
		lvl = slog.LevelWarn
	}
	if rest, ok := strings.CutPrefix(line, azureConsolePrefix); ok {
		return parseAzureConsole(rest, lvl)
	}
	return record{level: lvl, msg: line, source: SourceUser}
}

// parseAzureConsole reads the rest of an Azure worker's console line: the
// Node.js worker's "[error] " or "[warn] ", the Python worker's " LEVEL: ".
func parseAzureConsole(rest string, lvl slog.Level) record {
	switch {
	case strings.HasPrefix(rest, "[error] "):
		return record{level: slog.LevelError, msg: rest[len("[error] "):], source: SourceRuntime}
	case strings.HasPrefix(rest, "[warn] "):
		return record{level: slog.LevelWarn, msg: rest[len("[warn] "):], source: SourceRuntime}
	}
	rest = strings.TrimPrefix(rest, " ")
	if name, msg, ok := strings.Cut(rest, ": "); ok {
		switch name {
		case "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL":
			return record{level: parseLevel(name), msg: msg, source: SourceRuntime}
		}
	}
	return record{level: lvl, msg: rest, source: SourceRuntime}
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug", "trace":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "critical", "fatal":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (p *Process) emit(rec record, stream string) {
	log := p.spec.Log
	if log == nil || !log.Enabled(context.Background(), rec.level) {
		return
	}
	p.mu.Lock()
	fn, inst := p.spec.Function, p.spec.Instance
	p.mu.Unlock()
	if rec.function != "" {
		fn = rec.function
	}
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("function", fn), slog.String("instance", inst), slog.String("stream", stream))
	if rec.invocation != "" {
		attrs = append(attrs, slog.String("invocation", rec.invocation))
	}
	if rec.source != "" {
		attrs = append(attrs, slog.String("source", rec.source))
	}
	if rec.logger != "" {
		attrs = append(attrs, slog.String("logger", rec.logger))
	}
	if rec.exception != "" {
		attrs = append(attrs, slog.String("exception", rec.exception))
	}
	log.LogAttrs(context.Background(), rec.level, rec.msg, attrs...)
}
