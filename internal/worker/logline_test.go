package worker

import (
	"log/slog"
	"testing"
)

func TestParseLineSource(t *testing.T) {
	for _, tt := range []struct {
		name, line, stream string
		want               record
	}{
		{"plain stdout is the function's", "hello", "stdout",
			record{level: slog.LevelInfo, msg: "hello", source: SourceUser}},
		{"plain stderr is the function's", "oops", "stderr",
			record{level: slog.LevelWarn, msg: "oops", source: SourceUser}},
		{"runtime record on stderr", `{"level":"info","msg":"loaded","function":"f","source":"runtime"}`, "stderr",
			record{level: slog.LevelInfo, msg: "loaded", function: "f", source: SourceRuntime}},
		{"user record on stderr", `{"level":"error","msg":"bad","invocation_id":"i","source":"user"}`, "stderr",
			record{level: slog.LevelError, msg: "bad", invocation: "i", source: SourceUser}},
		{"record without a source is the function's", `{"level":"info","msg":"m"}`, "stderr",
			record{level: slog.LevelInfo, msg: "m", source: SourceUser}},
		{"unknown source is the function's", `{"level":"info","msg":"m","source":"host"}`, "stderr",
			record{level: slog.LevelInfo, msg: "m", source: SourceUser}},
		{"a record on stdout is the function's text", `{"level":"error","msg":"x","source":"runtime"}`, "stdout",
			record{level: slog.LevelInfo, msg: `{"level":"error","msg":"x","source":"runtime"}`, source: SourceUser}},
		{"Azure Python worker console line", "LanguageWorkerConsoleLog INFO: Starting Azure Functions Python Worker.", "stdout",
			record{level: slog.LevelInfo, msg: "Starting Azure Functions Python Worker.", source: SourceRuntime}},
		{"Azure Python worker error line", "LanguageWorkerConsoleLog ERROR: Error in load_function", "stderr",
			record{level: slog.LevelError, msg: "Error in load_function", source: SourceRuntime}},
		{"Azure Node.js worker error line", "LanguageWorkerConsoleLog[error] Incompatible Node.js version (v12.0.0).", "stderr",
			record{level: slog.LevelError, msg: "Incompatible Node.js version (v12.0.0).", source: SourceRuntime}},
		{"Azure Node.js worker warning line", "LanguageWorkerConsoleLog[warn] not officially supported", "stderr",
			record{level: slog.LevelWarn, msg: "not officially supported", source: SourceRuntime}},
		{"Azure Node.js worker line without a level", "LanguageWorkerConsoleLogCouldn't require bundle", "stdout",
			record{level: slog.LevelInfo, msg: "Couldn't require bundle", source: SourceRuntime}},
		{"the prefix elsewhere in a line is the function's", "say LanguageWorkerConsoleLog INFO: x", "stdout",
			record{level: slog.LevelInfo, msg: "say LanguageWorkerConsoleLog INFO: x", source: SourceUser}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseLine(tt.line, tt.stream); got != tt.want {
				t.Errorf("parseLine(%q, %s) = %+v, want %+v", tt.line, tt.stream, got, tt.want)
			}
		})
	}
}
