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

func parseLine(line, stream string) record {
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	if strings.HasPrefix(line, "{") {
		var rl runtimeLine
		if json.Unmarshal([]byte(line), &rl) == nil && rl.Msg != nil {
			return record{
				level:      parseLevel(rl.Level),
				msg:        *rl.Msg,
				invocation: rl.InvocationID,
				source:     rl.Source,
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
	return record{level: lvl, msg: line, source: "user"}
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
