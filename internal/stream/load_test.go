package stream

import (
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

func TestLoadRequestCarriesTheConcurrency(t *testing.T) {
	for _, conc := range []int{1, 8} {
		req := loadRequest(config.Function{Name: "f", Handler: "index.f", Codedir: "/c", Concurrency: conc}, "python")
		want := map[int]string{1: "1", 8: "8"}[conc]
		if got := req.GetMetadata().GetProperties()[PropConcurrency]; got != want {
			t.Errorf("concurrency %d: %s = %q, want %q", conc, PropConcurrency, got, want)
		}
	}
}
