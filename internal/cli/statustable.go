package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/polyfn/polyfn/internal/host"
)

// writeStatusTable writes polyfn status's table: one row per function, an
// app's functions named app/function. The functions of an app share its
// instances: the app's counts are on its first row. Each broken function of
// an app has a row of its own with state broken and the reason, each
// function polyfn cannot serve one with state unsupported; an error
// about the whole app is on a row app/*.
func writeStatusTable(w io.Writer, st host.AdminStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tRUNTIME\tPROTOCOL\tSTATE\tINSTANCES\tIN-FLIGHT\tQUEUED\tLAST ERROR")
	for _, f := range st.Functions {
		name := f.Name
		if f.App != "" {
			name = f.App + "/" + f.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", name, f.Runtime, f.Protocol, stateText(f.State, f.BackoffUntil),
			instances(f.Instances, f.Starting), f.InFlight, f.Queued, oneLine(f.LastError))
	}
	for _, a := range st.Apps {
		state := a.State
		if a.Error != "" {
			state = "broken"
		}
		state = stateText(state, a.BackoffUntil)
		counts := fmt.Sprintf("%s\t%d\t%d", instances(a.Instances, a.Starting), a.InFlight, a.Queued)
		row := func(fn, state, errText string) {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, fn, a.Runtime, "stream", state, counts, oneLine(errText))
			counts = "\t\t" // the app's counts once, on its first row
		}
		if a.Error != "" || len(a.Functions) == 0 {
			row("*", state, firstNonEmpty(a.Error, a.LastError))
		}
		for _, fn := range a.Functions {
			errText := ""
			if a.Error == "" {
				errText = a.LastError
			}
			row(fn, state, errText)
		}
		for _, b := range a.Broken {
			fn, reason := brokenFunction(b)
			row(fn, "broken", reason)
		}
		for _, u := range a.Unsupported {
			fn, reason := brokenFunction(u)
			row(fn, "unsupported", reason)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeAppTimers(w, st)
}

// The ways an app's broken-function errors name the function (see
// internal/stream's indexing and internal/azure's IndexApp).
var (
	brokenNamed = regexp.MustCompile(`^(?:function|load) ("(?:[^"\\]|\\.)*"|[^\s:]+): `)
	brokenJSON  = regexp.MustCompile(`^(.*[/\\]([^/\\]+)[/\\]function\.json): `)
)

// brokenFunction splits an app's broken-function error into the function's
// name ("*" when it names none: an error about the whole app) and the
// reason.
func brokenFunction(msg string) (name, reason string) {
	if m := brokenNamed.FindStringSubmatch(msg); m != nil {
		name = m[1]
		if unq, err := strconv.Unquote(name); err == nil {
			name = unq
		}
		return name, msg[len(m[0]):]
	}
	if m := brokenJSON.FindStringSubmatch(msg); m != nil {
		return m[2], filepath.Base(m[1]) + ": " + msg[len(m[0]):]
	}
	return "*", strings.TrimSpace(msg)
}
