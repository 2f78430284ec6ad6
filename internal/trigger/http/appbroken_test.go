package http

import (
	"crypto/sha256"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

// Who reads a broken app's reasons: a client with a key for auth.level
// (else function); everyone under auth.level anonymous; with no key
// configured, the clients of a loopback listener only.
func TestTellsBroken(t *testing.T) {
	fnKey, adminKey := sha256.Sum256([]byte("fn-key")), sha256.Sum256([]byte("admin-key"))
	keyed := func(level, listen string) *auth {
		c := &config.Config{}
		c.Auth.Level, c.HTTP.Listen = level, listen
		return &auth{cfg: c, function: [][sha256.Size]byte{fnKey}, admin: [][sha256.Size]byte{adminKey}}
	}
	keyless := func(level, listen string) *auth {
		c := &config.Config{}
		c.Auth.Level, c.HTTP.Listen = level, listen
		return &auth{cfg: c}
	}
	for _, tc := range []struct {
		name string
		a    *auth
		key  string
		want bool
	}{
		{"no config", nil, "", true},
		{"keys, no key", keyed("", "127.0.0.1:8080"), "", false},
		{"keys, wrong key", keyed("", "127.0.0.1:8080"), "nope", false},
		{"keys, function key", keyed("", "0.0.0.0:8080"), "fn-key", true},
		{"keys, admin key", keyed("", "0.0.0.0:8080"), "admin-key", true},
		{"auth.level admin, function key", keyed(config.LevelAdmin, "0.0.0.0:8080"), "fn-key", false},
		{"auth.level admin, admin key", keyed(config.LevelAdmin, "0.0.0.0:8080"), "admin-key", true},
		{"auth.level anonymous, no key", keyed(config.LevelAnonymous, "0.0.0.0:8080"), "", true},
		{"no keys, loopback", keyless("", "127.0.0.1:8080"), "", true},
		{"no keys, public listener", keyless("", "0.0.0.0:8080"), "", false},
		{"no keys, public listener, anonymous", keyless(config.LevelAnonymous, "0.0.0.0:8080"), "", true},
	} {
		if got := tc.a.tellsBroken(tc.key); got != tc.want {
			t.Errorf("%s: tellsBroken = %v, want %v", tc.name, got, tc.want)
		}
	}
}
