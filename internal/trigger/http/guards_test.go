package http

import "github.com/polyfn/polyfn/internal/host"

// The host is what the trigger runs behind: a change to either side that
// breaks one of these fails to compile instead of silently turning a
// feature off (NewHandler finds them by type assertion).
var (
	_ Invoker       = (*host.Host)(nil)
	_ AppRouter     = (*host.Host)(nil)
	_ AdminReporter = (*host.Host)(nil)
	_ WorkerGuarder = (*host.Host)(nil)
	_ MetricsSource = (*host.Host)(nil)
)
