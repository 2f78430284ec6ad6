// Package secret keeps the values a config took from the environment and
// from files (${VAR}, ${file:PATH}, env_from) and removes them from what
// polyfn prints: config errors, the admin document and the log.
package secret

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Mask replaces a secret value in printed text.
const Mask = "[redacted]"

// MinSubstringLen is the shortest secret searched for inside longer text.
// A shorter value is redacted only where a printed value equals it whole:
// searching text for every one- to three-byte value would mask most of it.
const MinSubstringLen = 4

// Set is a set of secret values; the zero value is empty and ready.
// It is safe for concurrent use.
type Set struct {
	mu   sync.RWMutex
	vals map[string]struct{}
	// sorted holds vals longest first, so that a secret containing another
	// is masked whole.
	sorted []string
}

// Process holds every secret value of every config loaded by this process,
// so that the log never prints one, even after a reload dropped it.
var Process = &Set{}

// Add records v as secret. The empty string is ignored.
func (s *Set) Add(v string) {
	if s == nil || v == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vals[v]; ok {
		return
	}
	if s.vals == nil {
		s.vals = map[string]struct{}{}
	}
	s.vals[v] = struct{}{}
	s.sorted = append(s.sorted, v)
	sort.SliceStable(s.sorted, func(i, j int) bool { return len(s.sorted[i]) > len(s.sorted[j]) })
}

// AddAll records every value of o.
func (s *Set) AddAll(o *Set) {
	if s == nil || o == nil || s == o {
		return
	}
	for _, v := range o.Values() {
		s.Add(v)
	}
}

// Values returns the secret values, longest first.
func (s *Set) Values() []string {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.sorted...)
}

// Len returns the number of secret values.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sorted)
}

// Redact returns text with every secret value replaced by Mask.
func (s *Set) Redact(text string) string {
	if s == nil || text == "" {
		return text
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.sorted {
		switch {
		case text == v:
			return Mask
		case len(v) >= MinSubstringLen && strings.Contains(text, v):
			text = strings.ReplaceAll(text, v, Mask)
		}
	}
	return text
}

// RedactAll replaces, in place, every secret in the strings reachable from
// ptr (a pointer to a struct, slice or map): fields, elements, map values.
// Unexported fields are left alone.
func (s *Set) RedactAll(ptr any) {
	if s.Len() == 0 {
		return
	}
	s.walk(reflect.ValueOf(ptr))
}

func (s *Set) walk(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			e := v.Elem()
			if v.Kind() == reflect.Interface {
				// An interface holds a copy that cannot be set: redact a
				// copy and put it back.
				c := reflect.New(e.Type()).Elem()
				c.Set(e)
				s.walk(c)
				if v.CanSet() {
					v.Set(c)
				}
				return
			}
			s.walk(e)
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(s.Redact(v.String()))
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				s.walk(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			s.walk(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			s.walk(e)
			v.SetMapIndex(k, e)
		}
	}
}

// Handler is a slog.Handler that masks the secrets of a Set in each
// record's message and attributes before passing it on.
type Handler struct {
	next slog.Handler
	set  *Set
}

// NewHandler returns a handler that redacts set's values and writes to next.
func NewHandler(next slog.Handler, set *Set) *Handler { return &Handler{next: next, set: set} }

// Enabled reports whether next handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle redacts r and passes it on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.set.Len() == 0 {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, h.set.Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs and returns a handler that adds them.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &Handler{next: h.next.WithAttrs(red), set: h.set}
}

// WithGroup returns a handler that nests attributes under name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), set: h.set}
}

func (h *Handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.set.Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = h.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		// Errors, stringers and anything else print as text: redact the
		// text and keep it when a secret was in it.
		text := fmt.Sprint(v.Any())
		if red := h.set.Redact(text); red != text {
			return slog.String(a.Key, red)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
