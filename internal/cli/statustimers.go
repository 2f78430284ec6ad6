package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/polyfn/polyfn/internal/host"
)

// writeAppTimers writes, after polyfn status's table, the timer functions
// of the apps (app/function, the resolved schedule, the next tick in UTC);
// nothing when no app has one.
func writeAppTimers(w io.Writer, st host.AdminStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	n := 0
	for _, a := range st.Apps {
		for _, t := range a.Timers {
			if n == 0 {
				fmt.Fprintln(tw, "\nTIMER\tSCHEDULE\tNEXT")
			}
			n++
			sched := t.Schedule
			if t.RunOnStartup {
				sched += " (runOnStartup)"
			}
			next := "never"
			if !t.Next.IsZero() {
				next = t.Next.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\n", a.Name, t.Function, sched, next)
		}
	}
	return tw.Flush()
}
