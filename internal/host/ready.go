package host

import "github.com/polyfn/polyfn/internal/config"

// Ready reports, without waiting, whether the host is fully up: every app
// indexed and every pool at its instances.min (WaitReady waits for the
// same). The functions' builds are done before New returns.
func (h *Host) Ready() bool {
	for _, a := range h.apps {
		select {
		case <-a.indexed:
		default:
			return false
		}
	}
	for _, p := range h.pools {
		if !p.AtMin() {
			return false
		}
	}
	return true
}

// AppAuthLevel is the authLevel of the HTTP trigger of function fn of app
// (as its function.json or decorator declares it; "function" when it
// declares none, as in Azure Functions). A level polyfn does not know
// ("system") is taken as admin.
func (h *Host) AppAuthLevel(app, fn string) string {
	for _, a := range h.apps {
		if a.cfg.Name != app {
			continue
		}
		a.mu.RLock()
		defer a.mu.RUnlock()
		for _, f := range a.functions {
			if f.Name != fn || f.HTTP == nil {
				continue
			}
			switch f.HTTP.AuthLevel {
			case config.LevelAnonymous, config.LevelFunction, config.LevelAdmin:
				return f.HTTP.AuthLevel
			}
			return config.LevelAdmin
		}
	}
	return config.LevelAdmin
}
