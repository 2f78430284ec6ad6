package azure

import (
	"fmt"
	"slices"
	"strings"
)

// SupportedTrigger is a trigger type whose functions polyfn serves.
type SupportedTrigger struct {
	// Type as function.json spells it (compared without regard to case).
	Type string
	// How polyfn serves it.
	How string
}

// SupportedTriggers are the trigger types whose functions polyfn serves. A
// function whose trigger is not here is reported as unsupported (see
// Unsupported) and not loaded; the rest of its app serves. Add a row when
// polyfn learns a trigger.
var SupportedTriggers = []SupportedTrigger{
	{Type: "httpTrigger", How: "served over HTTP under the app's route prefix"},
	{Type: "timerTrigger", How: "fired on its schedule by polyfn's timers"},
}

// supportedTrigger reports whether polyfn serves functions of trigger type t.
func supportedTrigger(t string) bool {
	return slices.ContainsFunc(SupportedTriggers, func(s SupportedTrigger) bool { return strings.EqualFold(s.Type, t) })
}

// SupportedOutputs are the output binding types (lower-case) polyfn
// delivers: an HTTP function's response. Any other output binding (queue,
// blob, table, ...) makes its function unsupported: polyfn would drop what
// the function writes to it.
var SupportedOutputs = map[string]bool{"http": true}

// Unsupported returns why polyfn cannot serve fn, one entry per binding
// it cannot serve ("queueTrigger \"msg\" (trigger)"); none when it can.
// Input bindings other than the trigger (blob, table, Cosmos DB inputs)
// are never served.
func Unsupported(fn *Function) []string {
	var out []string
	for _, b := range fn.Bindings {
		switch {
		case b.IsTrigger():
			if !supportedTrigger(b.Type) {
				out = append(out, fmt.Sprintf("%s %q (trigger)", b.Type, b.Name))
			}
		case b.Direction == DirectionIn:
			out = append(out, fmt.Sprintf("%s %q (input)", b.Type, b.Name))
		default:
			if !SupportedOutputs[strings.ToLower(b.Type)] {
				out = append(out, fmt.Sprintf("%s %q (%s)", b.Type, b.Name, b.Direction))
			}
		}
	}
	return out
}

// UnsupportedError is the error of a function polyfn cannot serve: it
// names the function and every binding polyfn cannot serve.
type UnsupportedError struct {
	Function string
	Bindings []string
}

func (e *UnsupportedError) Error() string {
	triggers := make([]string, len(SupportedTriggers))
	for i, s := range SupportedTriggers {
		triggers[i] = s.Type
	}
	return fmt.Sprintf("function %s: unsupported binding %s: polyfn serves %s functions with http outputs only",
		e.Function, strings.Join(e.Bindings, ", "), strings.Join(triggers, " and "))
}

// CheckSupported returns an *UnsupportedError when polyfn cannot serve fn.
func CheckSupported(fn *Function) error {
	if u := Unsupported(fn); len(u) > 0 {
		return &UnsupportedError{Function: fn.Name, Bindings: u}
	}
	return nil
}
