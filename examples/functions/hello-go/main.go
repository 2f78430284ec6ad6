// Command hello-go greets whoever is named in the event, from Go.
package main

import (
	"context"
	"runtime"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

type request struct {
	Name string `json:"name"`
}

func main() {
	polyfn.Start(func(ctx context.Context, event polyfn.Event) (any, error) {
		var req request
		_ = event.Decode(&req) // a non-JSON event leaves the name empty
		if req.Name == "" {
			req.Name = "world"
		}
		polyfn.Logger(ctx).Info("greeting " + req.Name)
		return map[string]string{
			"message":  "Hello, " + req.Name + "!",
			"runtime":  runtime.Version(),
			"function": polyfn.FromContext(ctx).FunctionName,
		}, nil
	})
}
