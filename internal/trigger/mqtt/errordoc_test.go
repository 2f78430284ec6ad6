package mqtt

import (
	"errors"
	"testing"

	"github.com/polyfn/polyfn/internal/invoke"
)

// The error document of an error of unknown origin says it is the host's,
// not the function's.
func TestErrorDocumentOfUnknownError(t *testing.T) {
	req := &invoke.Request{Function: "f", Payload: []byte(`{"a":1}`)}
	doc, ok := ParseErrorDocument(NewErrorDocument(req, errors.New("boom")))
	if !ok || doc.ErrorType != "InternalError" {
		t.Fatalf("got %+v, want errorType InternalError", doc)
	}
	doc, ok = ParseErrorDocument(NewErrorDocument(req, &invoke.Error{Kind: invoke.KindFunction, Type: "ValueError", Message: "bad"}))
	if !ok || doc.ErrorType != "ValueError" || doc.ErrorMessage != "bad" {
		t.Fatalf("got %+v, want the function's ValueError", doc)
	}
}
