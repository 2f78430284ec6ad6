package stream

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// The metadata encoded by hand decodes, on the worker's side, to the map
// the protocol defines, next to the request's other fields.
func TestTriggerMetadataOnTheWire(t *testing.T) {
	long := make(map[string]string)
	for i := range 300 {
		long[string(rune('a'+i%26))+string(rune(0x100+i))] = "value \"quoted\" <b>"
	}
	deadline, cancel := context.WithDeadline(context.Background(), time.Date(2026, 11, 29, 7, 0, 0, 500_000_000, time.FixedZone("X", 3600)))
	defer cancel()
	at := time.Date(2026, 11, 29, 6, 59, 58, 123_456_789, time.UTC)
	cases := []struct {
		name string
		ctx  context.Context
		req  *invoke.Request
	}{
		{"bare", context.Background(), &invoke.Request{ID: "i", Function: "f", Trigger: invoke.TriggerInvoke}},
		{"http", deadline, &invoke.Request{ID: "i", Function: "fn-é", Trigger: invoke.TriggerHTTP, Timestamp: at,
			HTTP: &invoke.HTTPInfo{Method: "POST", Path: "/function/f", Query: map[string]string{"a": "1"}, Headers: map[string]string{"content-type": "text/plain"}}}},
		{"http, large", deadline, &invoke.Request{ID: "i", Function: "f", Trigger: invoke.TriggerHTTP, Timestamp: at,
			HTTP: &invoke.HTTPInfo{Method: "GET", Path: "/function/f", Query: long, Headers: long}}},
		{"mqtt", deadline, &invoke.Request{ID: "i", Function: "f", Trigger: invoke.TriggerMQTT, Timestamp: at,
			MessageID: math.MaxUint64, QOS: 1, Topic: "a/b/#"}},
		{"timer", deadline, &invoke.Request{ID: "i", Function: "f", Trigger: invoke.TriggerTimer, Timestamp: at.Add(-time.Hour * 24 * 365 * 60)}},
	}
	// The map, the plain way, is the reference; HTTP as json.Marshal encodes it.
	if b, _ := json.Marshal(cases[1].req.HTTP); string(b) != string(cases[1].req.HTTP.AppendJSON(nil)) {
		t.Fatalf("HTTP JSON %s, want %s", cases[1].req.HTTP.AppendJSON(nil), b)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ir := &rpc.InvocationRequest{InvocationId: c.req.ID, FunctionId: c.req.Function,
				InputData:    []*rpc.ParameterBinding{{Name: "event", RpcData: &rpc.ParameterBinding_Data{Data: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte("payload")}}}}},
				TraceContext: &rpc.RpcTraceContext{TraceParent: "tp"}}
			setTriggerMetadata(ir, c.ctx, c.req)
			b, err := proto.Marshal(&rpc.StreamingMessage{RequestId: "r", Content: &rpc.StreamingMessage_InvocationRequest{InvocationRequest: ir}})
			if err != nil {
				t.Fatal(err)
			}
			var got rpc.StreamingMessage
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := &rpc.InvocationRequest{InvocationId: c.req.ID, FunctionId: c.req.Function, InputData: ir.InputData, TraceContext: ir.TraceContext,
				TriggerMetadata: triggerMetadata(c.ctx, c.req)}
			if gir := got.GetInvocationRequest(); !proto.Equal(gir, want) || len(gir.ProtoReflect().GetUnknown()) != 0 {
				t.Errorf("decoded\n%v\nwant\n%v", gir, want)
			}
		})
	}
}

// A string protobuf cannot encode takes the map, and fails to encode as
// it did before.
func TestTriggerMetadataInvalidUTF8(t *testing.T) {
	ir := &rpc.InvocationRequest{InvocationId: "i"}
	setTriggerMetadata(ir, context.Background(), &invoke.Request{Function: "f", Trigger: invoke.TriggerMQTT, Topic: "bad \xff"})
	if ir.TriggerMetadata["messageTopic"].GetString_() != "bad \xff" || len(ir.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("metadata %v, unknown %q", ir.TriggerMetadata, ir.ProtoReflect().GetUnknown())
	}
	if _, err := proto.Marshal(ir); err == nil {
		t.Error("protobuf encoded a string that is not UTF-8")
	}
}
