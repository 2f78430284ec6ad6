package mqtt

import "time"

// SetTimeouts sets the retire timeout and the bound of one SUBSCRIBE of a
// trigger that has no rules yet.
func SetTimeouts(t *Trigger, retire, subscribe time.Duration) {
	t.retireTimeout, t.subscribeTimeout = retire, subscribe
}

// ClientIDFor is the client id of the session of filter.
func ClientIDFor(o Options, filter string) string { return o.clientIDFor(filter) }

// Retiring is how many filters are being retired.
func Retiring(t *Trigger) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.retiring)
}
