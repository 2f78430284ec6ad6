package azure

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func fnWith(t *testing.T, name string, bindings ...string) *Function {
	t.Helper()
	fn := &Function{Name: name}
	var raws []json.RawMessage
	for _, b := range bindings {
		raws = append(raws, json.RawMessage(b))
	}
	if err := fn.setBindings(raws); err != nil {
		t.Fatal(err)
	}
	return fn
}

func TestCheckSupported(t *testing.T) {
	ok := []*Function{
		fnWith(t, "http", `{"type":"httpTrigger","name":"req","direction":"in"}`, `{"type":"http","name":"$return","direction":"out"}`),
		fnWith(t, "timer", `{"type":"timerTrigger","name":"myTimer","direction":"in","schedule":"*/5 * * * * *"}`),
	}
	for _, fn := range ok {
		if err := CheckSupported(fn); err != nil {
			t.Errorf("%s: %v", fn.Name, err)
		}
	}
	for _, c := range []struct {
		fn   *Function
		want string
	}{
		{fnWith(t, "q", `{"type":"queueTrigger","name":"msg","direction":"in","queueName":"orders"}`), `function q: unsupported binding queueTrigger "msg" (trigger)`},
		{fnWith(t, "h", `{"type":"httpTrigger","name":"req","direction":"in"}`, `{"type":"queue","name":"out","direction":"out"}`, `{"type":"blob","name":"inBlob","direction":"in"}`),
			`function h: unsupported binding queue "out" (out), blob "inBlob" (input)`},
		{fnWith(t, "c", `{"type":"cosmosDBTrigger","name":"docs","direction":"in"}`), `cosmosDBTrigger "docs" (trigger)`},
	} {
		err := CheckSupported(c.fn)
		var ue *UnsupportedError
		if !errors.As(err, &ue) || ue.Function != c.fn.Name || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.fn.Name, err, c.want)
		}
	}
}
