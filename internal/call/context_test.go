package call

import (
	"encoding/json"
	"testing"

	"github.com/polyfn/polyfn/internal/invoke"
)

func TestInvocationContextJSON(t *testing.T) {
	cases := []invocationContext{
		{},
		{Trigger: invoke.TriggerInvoke},
		{Trigger: invoke.TriggerHTTP, Deadline: "2026-11-29T07:00:00.5Z", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "a=1,b=<2>",
			HTTP: &invoke.HTTPInfo{Method: "POST", Path: "/function/f", Query: map[string]string{"q": "1"}, Headers: map[string]string{"content-type": "text/plain", "x-odd": "\"é\"\n"}}},
		{Trigger: invoke.TriggerTimer, Deadline: "2026-11-29T07:00:00Z", ScheduledTime: "2026-11-29T06:59:00.123456789Z"},
		{Trigger: "odd \"trigger\"", HTTP: &invoke.HTTPInfo{}},
	}
	for _, ic := range cases {
		want, err := json.Marshal(ic)
		if err != nil {
			t.Fatal(err)
		}
		if got := ic.appendJSON(nil); string(got) != string(want) {
			t.Errorf("appendJSON\n got %s\nwant %s", got, want)
		}
	}
}
