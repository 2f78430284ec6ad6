package mqtt_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// FuzzErrorDocument writes the error documents of arbitrary failed
// messages and reads them back: a document is JSON (valid UTF-8), is
// recognised by ParseErrorDocument, and gives back each field as JSON
// carries it, the message's payload as it was (when JSON), as a string
// (when UTF-8 text) or as base64. ParseErrorDocument must not panic on any
// payload.
func FuzzErrorDocument(f *testing.F) {
	f.Add([]byte(`{"id": "x"}`), "bad input: x", "ValueError", true, "fail", "inv-1", "e/in")
	f.Add([]byte("not json"), "attempt 3 fails", "", true, "f", "", "")
	f.Add([]byte("\xff\x00binary"), "timed out after 1s", "Timeout", false, "", "", "a/\u2028")
	f.Add([]byte(` [1, 2.50, "\u00e9", {"a": null}] `), "\xff<&>", "\"quoted\"", true, "f\xfe", "\n", "t")
	f.Add([]byte(`{"functionMessage": 1, "errorMessage": "m", "errorType": "T", "ERRORTYPE": 2}`), "m", "T", true, "f", "i", "t")
	f.Fuzz(func(t *testing.T, payload []byte, msg, typ string, invokeErr bool, fn, id, topic string) {
		_, _ = mqtt.ParseErrorDocument(payload)

		var err error = errors.New(msg)
		if invokeErr {
			err = &invoke.Error{Kind: invoke.KindFunction, Type: typ, Message: msg}
		}
		req := &invoke.Request{ID: id, Function: fn, Topic: topic, Payload: payload}
		b := mqtt.NewErrorDocument(req, err)
		if !json.Valid(b) || !utf8.Valid(b) {
			t.Fatalf("error document is not JSON in UTF-8: %q", b)
		}
		doc, ok := mqtt.ParseErrorDocument(b)
		if !ok {
			t.Fatalf("ParseErrorDocument does not recognise %s", b)
		}
		wantType := "InternalError" // no type known: the host's
		if invokeErr && typ != "" {
			wantType = typ
		}
		for _, c := range []struct{ name, got, want string }{
			{"errorMessage", doc.ErrorMessage, msg}, {"errorType", doc.ErrorType, wantType},
			{"functionName", doc.FunctionName, fn}, {"functionInvokeID", doc.FunctionInvokeID, id}, {"messageTopic", doc.MessageTopic, topic},
		} {
			if c.got != asJSON(c.want) {
				t.Fatalf("%s %q, want %q", c.name, c.got, asJSON(c.want))
			}
		}
		var got, want any
		if err := json.Unmarshal(doc.FunctionMessage, &got); err != nil {
			t.Fatalf("functionMessage %s: %v", doc.FunctionMessage, err)
		}
		switch {
		case json.Valid(payload) && utf8.Valid(payload):
			if err := json.Unmarshal(payload, &want); err != nil {
				t.Fatal(err)
			}
		case utf8.Valid(payload):
			want = string(payload)
		default:
			want = base64.StdEncoding.EncodeToString(payload)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("functionMessage %s, want %#v from payload %q", doc.FunctionMessage, want, payload)
		}
	})
}

// asJSON is s as it comes back from JSON: bytes that are not UTF-8 are
// U+FFFD.
func asJSON(s string) string {
	b, _ := json.Marshal(s)
	var back string
	_ = json.Unmarshal(b, &back)
	return back
}
