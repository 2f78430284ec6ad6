package http

import (
	"errors"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// tellsBroken reports whether a client sending key may read why an app is
// broken (the 502 AppBroken's reasons: the worker's error, its stderr, the
// app's paths). A broken app's functions, and so their levels, are unknown:
// the client must hold a key for auth.level when it is set (anonymous:
// everyone may), else for function, the level of an app function that
// declares none. With no key configured at all, nobody can hold one: the
// reasons go to every client of a loopback listener (only this machine
// reaches it, as it does the admin endpoints) and to none of another,
// unless auth.level is anonymous.
func (a *auth) tellsBroken(key string) bool {
	if a == nil || a.cfg.Auth.Level == config.LevelAnonymous {
		return true
	}
	if len(a.function) == 0 && len(a.admin) == 0 {
		return config.LoopbackListen(a.cfg.HTTP.Listen)
	}
	level := a.cfg.Auth.Level
	if level == "" {
		level = config.LevelFunction
	}
	return a.allows(level, key)
}

// withoutReasons returns err, a 502 AppBroken, with only its public message
// ("app X is not available") when the client may not read the reasons; any
// other error as it is.
func (h *Handler) withoutReasons(err error, key string) error {
	var ab *invoke.AppsBroken
	if !errors.As(err, &ab) || h.auth.tellsBroken(key) {
		return err
	}
	return &invoke.Error{Kind: invoke.KindOf(err), Type: "AppBroken", Message: ab.Public()}
}
