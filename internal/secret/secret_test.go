package secret_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/secret"
)

const pw = "hunter2-very-secret"

func TestRedact(t *testing.T) {
	s := &secret.Set{}
	s.Add(pw)
	s.Add(pw + "-longer")
	s.Add("ab")
	for in, want := range map[string]string{
		"x " + pw + " y":        "x [redacted] y",
		pw + "-longer":          "[redacted]",
		"ab":                    "[redacted]",
		"about abc":             "about abc", // short values only whole
		"no secret here at all": "no secret here at all",
	} {
		if got := s.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// The admin document masks a secret a worker's error quoted, in every
// place it can appear.
func TestRedactAdminStatus(t *testing.T) {
	s := &secret.Set{}
	s.Add(pw)
	st := host.AdminStatus{
		Functions: []host.FunctionStatus{{Name: "f", Stats: pool.Stats{LastError: "KeyError: token " + pw}}},
		Apps:      []host.AppStatus{{Name: "a", Error: "env " + pw, Broken: []string{"g: " + pw}}},
	}
	s.RedactAll(&st)
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), pw) || !strings.Contains(string(out), secret.Mask) {
		t.Errorf("admin JSON = %s", out)
	}
}

func TestHandler(t *testing.T) {
	s := &secret.Set{}
	s.Add(pw)
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if format == "json" {
			h = slog.NewJSONHandler(&buf, nil)
		}
		log := slog.New(secret.NewHandler(h, s)).With("pre", "with "+pw)
		log.Info("started with "+pw, "env", pw, "err", fmt.Errorf("wrapped: %w", errors.New(pw)),
			slog.Group("g", "inner", "x"+pw), "n", 3, "stringer", stringer{})
		log.WithGroup("grp").Error("e", "k", []string{pw})
		if strings.Contains(buf.String(), pw) {
			t.Errorf("%s log prints the secret:\n%s", format, buf.String())
		}
		if n := strings.Count(buf.String(), secret.Mask); n != 8 {
			t.Errorf("%s log has %d masks, want 8:\n%s", format, n, buf.String())
		}
	}
}

type stringer struct{}

func (stringer) String() string { return "s=" + pw }
