package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/host"
)

// TestStatusListsAppTimers checks that polyfn status lists the timer
// functions of apps after the table, with schedule and next tick, and adds
// nothing when no app has one.
func TestStatusListsAppTimers(t *testing.T) {
	next := time.Date(2026, 12, 3, 14, 5, 2, 0, time.UTC)
	st := host.AdminStatus{Apps: []host.AppStatus{{Name: "clock", Runtime: "azure-node", Functions: []string{"tick", "daily"},
		Timers: []host.AppTimerStatus{
			{Function: "tick", Schedule: "*/2 * * * * *", Next: next},
			{Function: "daily", Schedule: "0 0 0 * * *", RunOnStartup: true, Next: next.Add(10 * time.Hour)},
		}}}}
	var b strings.Builder
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	want := `
TIMER        SCHEDULE                    NEXT
clock/tick   */2 * * * * *               2026-12-03T14:05:02Z
clock/daily  0 0 0 * * * (runOnStartup)  2026-12-04T00:05:02Z
`
	if got := trimLines(b.String()); !strings.HasSuffix(got, want) {
		t.Errorf("status:\n%s\nwant it to end with:%s", got, want)
	}
	st.Apps[0].Timers = nil
	b.Reset()
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "TIMER") {
		t.Errorf("a timer table without timers:\n%s", b.String())
	}
}
