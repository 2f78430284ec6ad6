package metrics

import (
	"slices"
	"testing"
)

// TestForgetUnauthorized checks that forgetting a function deletes its 401
// series, and forgetting an app those of its functions (APP/FUNCTION),
// leaving every other function's series.
func TestForgetUnauthorized(t *testing.T) {
	m := NewHTTPListener(func() int64 { return 0 }, func() int64 { return 0 })
	for _, f := range []string{"fn", "fn2", "shop/list", "shop/buy", "shopper/x"} {
		m.Unauthorized(f)
	}
	series := func() (out []string) {
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "polyfn_http_unauthorized_total" {
				continue
			}
			for _, s := range mf.GetMetric() {
				out = append(out, s.GetLabel()[0].GetValue())
			}
		}
		slices.Sort(out)
		return out
	}
	if got := series(); len(got) != 5 {
		t.Fatalf("series %v, want 5", got)
	}
	m.Forget("shop")
	m.Forget("fn")
	if got, want := series(), []string{"fn2", "shopper/x"}; !slices.Equal(got, want) {
		t.Errorf("series after forgetting shop and fn: %v, want %v", got, want)
	}
}
