package http

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

func testAuth(n int) *auth {
	cfg := &config.Config{HTTP: config.HTTP{Listen: "0.0.0.0:8080"}}
	src := config.KeySource{}
	for i := range n {
		src.Keys = append(src.Keys, config.Key{Name: fmt.Sprint(i), Value: config.Secret(fmt.Sprintf("key-%02d-0123456789abcdef", i))})
	}
	cfg.Auth.FunctionKeys = []config.KeySource{src}
	cfg.Auth.AdminKeys = []config.KeySource{{Keys: []config.Key{{Name: "ops", Value: "admin-0123456789abcdef"}}}}
	return newAuth(cfg)
}

// Every key opens its level and no other; a key's prefix, a longer text
// and the empty key open nothing.
func TestAllows(t *testing.T) {
	a := testAuth(3)
	for _, c := range []struct {
		level, key string
		want       bool
	}{
		{config.LevelAnonymous, "", true}, {config.LevelFunction, "", false}, {config.LevelFunction, "key-01-0123456789abcdef", true},
		{config.LevelFunction, "key-01-0123456789abcde", false}, {config.LevelFunction, "key-01-0123456789abcdefX", false},
		{config.LevelFunction, "admin-0123456789abcdef", true}, {config.LevelAdmin, "key-02-0123456789abcdef", false},
		{config.LevelAdmin, "admin-0123456789abcdef", true},
	} {
		if got := a.allows(c.level, c.key); got != c.want {
			t.Errorf("allows(%s, %q) = %v, want %v", c.level, c.key, got, c.want)
		}
	}
	if a.level("undeclared") != config.LevelFunction {
		t.Errorf("the default level on 0.0.0.0 is %s, want function", a.level("undeclared"))
	}
}

// takeKey takes the key from the header or the code parameter, and leaves
// neither for the function.
func TestTakeKey(t *testing.T) {
	r := httptest.NewRequest("POST", "/function/f?a=1&code=k1&zipcode=9", nil)
	if got := takeKey(r, true, KeyHeader); got != "k1" || r.URL.Query().Has("code") || r.URL.Query().Get("zipcode") != "9" || r.URL.Query().Get("a") != "1" {
		t.Errorf("code: got %q, query left %q", got, r.URL.RawQuery)
	}
	r = httptest.NewRequest("POST", "/api/f", nil)
	r.Header.Set(AzureKeyHeader, "k2")
	r.Header.Set(KeyHeader, "k3")
	if got := takeKey(r, true, AzureKeyHeader, KeyHeader); got != "k2" || r.Header.Get(AzureKeyHeader) != "" || r.Header.Get(KeyHeader) != "" {
		t.Errorf("headers: got %q, left %v", got, r.Header)
	}
}

func BenchmarkAllows10Keys(b *testing.B) {
	a := testAuth(10)
	for b.Loop() {
		if !a.allows(config.LevelFunction, "key-09-0123456789abcdef") {
			b.Fatal("refused")
		}
	}
}
