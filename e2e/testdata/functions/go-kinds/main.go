// Command go-kinds serves the end-to-end semantic table in Go: one binary,
// a behaviour per function name.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// valueError names its type like the other languages' fixtures do.
type valueError struct{ msg string }

func (e *valueError) Error() string     { return e.msg }
func (e *valueError) ErrorType() string { return "ValueError" }

func main() {
	polyfn.Start(func(ctx context.Context, event polyfn.Event) (any, error) {
		c := polyfn.FromContext(ctx)
		switch c.FunctionName {
		case "echo":
			return event, nil
		case "returns":
			var in struct{ Kind string }
			_ = event.Decode(&in)
			switch in.Kind {
			case "none":
				return nil, nil
			case "bytes":
				return []byte("\x00raw\xffbytes"), nil
			case "str":
				return "hello", nil
			}
			return map[string]any{"kind": "dict", "n": []int{1, 2, 3}}, nil
		case "fail":
			var in struct{ Why string }
			_ = event.Decode(&in)
			return nil, &valueError{"bad input: " + in.Why}
		case "slow":
			time.Sleep(300 * time.Millisecond)
			return "done", nil
		case "respond":
			var in struct{ Name string }
			_ = event.Decode(&in)
			return &polyfn.Response{Status: 201, Header: map[string]string{"x-kind": "go"}, Body: map[string]string{"created": in.Name}}, nil
		case "ctx":
			env := map[string]*string{}
			for _, k := range []string{"GREETING", "RUNTIME_VAR", "POLYFN_SECRET", "BAETYL_SERVICE_INSTANCE_NAME", "FUNCTIONS_WORKER_DIRECTORY"} {
				if v, ok := os.LookupEnv(k); ok {
					env[k] = &v
				}
			}
			cwd, _ := os.Getwd()
			// The Baetyl context keys, invokeid included.
			var keys map[string]any
			b, _ := json.Marshal(c)
			_ = json.Unmarshal(b, &keys)
			keys["invokeid"] = c.InvocationID
			return map[string]any{"context": keys, "env": env, "cwd": cwd}, nil
		}
		return nil, errors.New("no such behaviour: " + c.FunctionName)
	})
}
