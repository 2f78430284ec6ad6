package call

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/polyfn/polyfn/internal/invoke"
)

// FuzzInvocationContextJSON encodes arbitrary invocation contexts, the
// call protocol's context metadata, by hand (appendJSON): the bytes must be
// those encoding/json gives, and decode back to the same context.
func FuzzInvocationContextJSON(f *testing.F) {
	f.Add("http", "2026-11-29T07:00:00.5Z", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=1,b=<2>", "",
		true, "POST", "/function/f", "q", "1", "x-odd", "\"é\"\n")
	f.Add("timer", "2026-11-29T07:00:00Z", "", "", "2026-11-29T06:59:00.123456789Z", false, "", "", "", "", "", "")
	f.Add("odd \"trigger\"", "", "", "", "", true, "", "", "", "", "", "")
	f.Add("\xff\u2028<&>", "\x00", "\\", "\x7f", "\xc3", true, "G\xe9T", "/\u2029", "\xed\xa0\x80", "", "\t", "")
	f.Fuzz(func(t *testing.T, trigger, deadline, traceparent, tracestate, scheduled string, hasHTTP bool, method, path, qk, qv, hk, hv string) {
		ic := invocationContext{Trigger: invoke.Trigger(trigger), Deadline: deadline, TraceParent: traceparent, TraceState: tracestate, ScheduledTime: scheduled}
		if hasHTTP {
			ic.HTTP = &invoke.HTTPInfo{Method: method, Path: path, Query: map[string]string{qk: qv, "z": "last"}, Headers: map[string]string{hk: hv}}
		}
		want, err := json.Marshal(ic)
		if err != nil {
			t.Fatal(err)
		}
		got := ic.appendJSON(nil)
		if string(got) != string(want) {
			t.Fatalf("appendJSON\n got %s\nwant %s", got, want)
		}
		var back invocationContext
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendJSON made JSON that does not decode: %v\n%s", err, got)
		}
		// Valid UTF-8 comes back as it was (encoding/json replaces the rest).
		all := []string{trigger, deadline, traceparent, tracestate, scheduled, method, path, qk, qv, hk, hv}
		if slices.IndexFunc(all, func(s string) bool { return !utf8.ValidString(s) }) < 0 && !reflect.DeepEqual(back, ic) {
			t.Fatalf("decoded\n%+v\nwant\n%+v", back, ic)
		}
	})
}
