package invoke

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// An error of unknown origin is the host's, never the function's.
func TestKindOfUnknownErrorIsInternal(t *testing.T) {
	err := fmt.Errorf("encode: %w", errors.New("boom"))
	if k := KindOf(err); k != KindInternal {
		t.Fatalf("KindOf(%v) = %d, want KindInternal", err, k)
	}
	if o := Outcome(err); o != "InternalError" {
		t.Fatalf("Outcome = %q, want InternalError", o)
	}
	if k := KindOf(fmt.Errorf("wrapped: %w", Errorf(KindFunction, "x"))); k != KindFunction {
		t.Fatalf("a wrapped function error is %d, want KindFunction", k)
	}
}

// A Timeout error names the timeout that expired and its config key.
func TestTimeoutErrorNamesTheTimeout(t *testing.T) {
	ctx, cancel := WithTimeout(context.Background(), &TimeoutCause{Function: "f", Timeout: time.Millisecond, Key: "functions[3].timeout"})
	defer cancel()
	<-ctx.Done()
	e := TimeoutError(ctx, "function f did not finish")
	for _, want := range []string{"function f did not finish", "timeout of function f", "1ms", "functions[3].timeout"} {
		if e.Kind != KindTimeout || !strings.Contains(e.Message, want) {
			t.Errorf("got %v (kind %d), want a Timeout naming %q", e, e.Kind, want)
		}
	}
}
