package mqtt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/polyfn/polyfn/internal/invoke"
)

// ErrorDocument is what a rule publishes when its function failed (after
// its retries): the Baetyl function module's fields, plus where it came from.
type ErrorDocument struct {
	// FunctionMessage is the message's payload: as is when it is JSON (in
	// UTF-8), else a JSON string (base64 when it is not UTF-8).
	FunctionMessage json.RawMessage `json:"functionMessage"`
	// ErrorMessage and ErrorType describe the failure: the exception's
	// message and class for function errors (ValueError), else one of the
	// host's error types (Timeout, WorkerCrashed, ...).
	ErrorMessage     string `json:"errorMessage"`
	ErrorType        string `json:"errorType"`
	FunctionName     string `json:"functionName,omitempty"`
	FunctionInvokeID string `json:"functionInvokeID,omitempty"`
	MessageTopic     string `json:"messageTopic,omitempty"`
}

// NewErrorDocument returns the JSON error document of req's failure.
func NewErrorDocument(req *invoke.Request, err error) []byte {
	// An error that is not an *invoke.Error has no known origin: the host's.
	doc := ErrorDocument{FunctionMessage: functionMessage(req.Payload), ErrorMessage: err.Error(), ErrorType: "InternalError",
		FunctionName: req.Function, FunctionInvokeID: req.ID, MessageTopic: req.Topic}
	var ie *invoke.Error
	if errors.As(err, &ie) {
		doc.ErrorMessage = ie.Message
		if ie.Type != "" {
			doc.ErrorType = ie.Type
		}
	}
	b, _ := json.Marshal(doc)
	return b
}

// functionMessage is the payload p as the document carries it: as is
// when it is JSON, else a JSON string. encoding/json takes strings that
// are not UTF-8 for JSON, and copies them into the document as they are:
// such a payload is not JSON to anyone else, and goes as base64.
func functionMessage(p []byte) json.RawMessage {
	valid := utf8.Valid(p)
	if len(p) > 0 && valid && json.Valid(p) {
		return p
	}
	s := string(p)
	if !valid {
		s = base64.StdEncoding.EncodeToString(p)
	}
	b, _ := json.Marshal(s)
	return b
}

// ParseErrorDocument returns the error document b holds, if it is one.
func ParseErrorDocument(b []byte) (*ErrorDocument, bool) {
	var keys map[string]json.RawMessage
	if json.Unmarshal(b, &keys) != nil {
		return nil, false
	}
	for _, k := range []string{"functionMessage", "errorMessage", "errorType"} {
		if _, ok := keys[k]; !ok {
			return nil, false
		}
	}
	var doc ErrorDocument
	if json.Unmarshal(b, &doc) != nil {
		return nil, false
	}
	return &doc, true
}
