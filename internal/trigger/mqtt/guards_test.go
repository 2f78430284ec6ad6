package mqtt

import "github.com/polyfn/polyfn/internal/host"

// The host is what the trigger invokes.
var _ Invoker = (*host.Host)(nil)
