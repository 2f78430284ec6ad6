// Command go-noop does nothing: the benchmark measures the host and the
// runtime around it.
package main

import (
	"context"

	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() {
	polyfn.Start(func(context.Context, polyfn.Event) (any, error) { return nil, nil })
}
