package http

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/polyfn/polyfn/internal/invoke"
)

type echoInvoker struct{}

func (echoInvoker) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	return &invoke.Result{Payload: req.Payload}, nil
}

func BenchmarkSmallBody(b *testing.B) {
	h := NewHandler(echoInvoker{}, nil, 6<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
	body := bytes.Repeat([]byte("x"), 200)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/function/echo", bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
