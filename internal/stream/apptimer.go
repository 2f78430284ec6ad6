package stream

import (
	"strings"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// appTimerInput fills ir for a timer invocation of the app function fn, a
// timerTrigger function: the timer info the timer trigger built
// (req.Payload) as json under the trigger binding's name, and the trigger
// metadata the official host sends. It reports false when req is not such
// an invocation.
func appTimerInput(ir *rpc.InvocationRequest, fn *azure.Function, req *invoke.Request) bool {
	t := fn.Trigger()
	if req.Trigger != invoke.TriggerTimer || req.HTTPRequest != nil || t == nil || !strings.EqualFold(t.Type, "timerTrigger") {
		return false
	}
	ir.FunctionId = fn.ID
	ir.InputData, ir.TriggerMetadata = azure.TimerInput(fn.Name, t.Name, req.Payload, time.Now(), nil)
	return true
}
