// Command go-echo returns its payload unchanged, for the benchmark's
// payload rows.
package main

import (
	"context"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() {
	polyfn.Start(func(_ context.Context, event polyfn.Event) (any, error) { return event.Raw(), nil })
}
