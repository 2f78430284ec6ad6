package azure

import (
	"encoding/json"
	"fmt"
	"strings"
)

// LogLevel is a .NET log level, as host.json's logging.logLevel names them
// and as the worker's RpcLog carries them (same order and values).
type LogLevel int

// Log levels.
const (
	LevelTrace LogLevel = iota
	LevelDebug
	LevelInformation
	LevelWarning
	LevelError
	LevelCritical
	LevelNone
)

var levelNames = []string{"Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"}

func (l LogLevel) String() string {
	if l >= 0 && int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("LogLevel(%d)", int(l))
}

// parseLogLevel parses a logging.logLevel value (a level name, any case).
func parseLogLevel(v json.RawMessage) (LogLevel, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("must be a level name (%s), not %s", strings.Join(levelNames, ", "), v)
	}
	for i, n := range levelNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return LogLevel(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a level (%s)", s, strings.Join(levelNames, ", "))
}

// Log categories of an app's logs, as the official host names them.
//
//   - FunctionCategory(name) ("Function.<name>"): what the worker logs as
//     the system during an invocation of the function;
//   - FunctionUserCategory(name) ("Function.<name>.User"): what the
//     function logs (RpcLog category User);
//   - WorkerCategory(runtime) ("Worker.LanguageWorkerChannel.<runtime>"):
//     what the worker logs outside invocations.
func FunctionCategory(name string) string     { return "Function." + name }
func FunctionUserCategory(name string) string { return "Function." + name + ".User" }
func WorkerCategory(runtime string) string    { return "Worker.LanguageWorkerChannel." + runtime }

// LogLevels holds host.json's logging.logLevel: a minimum level per
// category. The zero value passes Information and above, the official
// host's default.
type LogLevels struct {
	rules []levelRule
}

type levelRule struct {
	category string // as written; "default" is the fallback
	level    LogLevel
}

// set records category's level; a later setting of the same category (any
// case) replaces it.
func (l *LogLevels) set(category string, level LogLevel) {
	for i, r := range l.rules {
		if strings.EqualFold(r.category, category) {
			l.rules[i].level = level
			return
		}
	}
	l.rules = append(l.rules, levelRule{category, level})
}

// Min returns the minimum level of category, chosen as .NET's logger
// filter chooses a rule: the rules whose category is a prefix of category
// (any case; one '*' in a rule matches any run of characters), the longest
// one winning; else "default"; else Information.
func (l LogLevels) Min(category string) LogLevel {
	best, bestLen := LevelInformation, -1
	for _, r := range l.rules {
		if strings.EqualFold(r.category, "default") {
			if bestLen < 0 {
				best, bestLen = r.level, 0
			}
			continue
		}
		if matchCategory(r.category, category) && len(r.category) > bestLen {
			best, bestLen = r.level, len(r.category)
		}
	}
	return best
}

// Enabled reports whether a record of level in category passes.
func (l LogLevels) Enabled(category string, level LogLevel) bool {
	min := l.Min(category)
	return min != LevelNone && level >= min && level != LevelNone
}

// Set reports whether host.json set any level.
func (l LogLevels) Set() bool { return len(l.rules) > 0 }

// matchCategory: rule is a prefix of category, without regard to case; a
// '*' in rule splits it into a prefix and a suffix that must both match.
func matchCategory(rule, category string) bool {
	lr, lc := strings.ToLower(rule), strings.ToLower(category)
	if i := strings.IndexByte(lr, '*'); i >= 0 {
		pre, suf := lr[:i], lr[i+1:]
		return len(lc) >= len(pre)+len(suf) && strings.HasPrefix(lc, pre) && strings.HasSuffix(lc, suf)
	}
	return strings.HasPrefix(lc, lr)
}
