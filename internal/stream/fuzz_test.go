package stream

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// FuzzTriggerMetadata encodes the trigger_metadata of arbitrary requests by
// hand (setTriggerMetadata) and decodes the message with protobuf-go: the
// map must be the one the protocol defines (triggerMetadata, built with
// protobuf's own types) and nothing may be left over; the http entry must
// be what encoding/json makes of the request.
func FuzzTriggerMetadata(f *testing.F) {
	f.Add("http", "f", "", uint64(0), uint32(0), int64(1764399598), int64(123456789), true, int64(1764399600500000000),
		true, "POST", "/function/f", "a", "1", "content-type", "text/plain")
	f.Add("mqtt", "fn-é", "a/b/#", uint64(math.MaxUint64), uint32(1), int64(-5), int64(0), false, int64(0),
		false, "", "", "", "", "", "")
	f.Add("timer", "f", "", uint64(0), uint32(0), int64(-1e11), int64(999999999), true, int64(math.MaxInt64),
		false, "", "", "", "", "", "")
	f.Add("invoke", "f", "t", uint64(7), uint32(math.MaxUint32), int64(0), int64(0), true, int64(math.MinInt64),
		true, "GET", "/function/f\u2028", "q<&>", "\"\\\x00", "x-odd", "\xff\xfe")
	f.Add("bad \xff", "f", "", uint64(0), uint32(0), int64(0), int64(0), false, int64(0), false, "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, trigger, function, topic string, id uint64, qos uint32, sec, nsec int64, hasDeadline bool, deadline int64,
		hasHTTP bool, method, path, qk, qv, hk, hv string) {
		req := &invoke.Request{ID: "i", Function: function, Trigger: invoke.Trigger(trigger), MessageID: id, QOS: qos, Topic: topic,
			Timestamp: time.Unix(sec, nsec)}
		if hasHTTP {
			req.HTTP = &invoke.HTTPInfo{Method: method, Path: path, Query: map[string]string{qk: qv}, Headers: map[string]string{hk: hv, "accept": "*/*"}}
			want, err := json.Marshal(req.HTTP)
			if err != nil {
				t.Fatal(err)
			}
			if got := req.HTTP.AppendJSON(nil); string(got) != string(want) {
				t.Fatalf("AppendJSON\n got %s\nwant %s", got, want)
			}
		}
		ctx := context.Background()
		if hasDeadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, time.Unix(0, deadline))
			defer cancel()
		}
		ir := &rpc.InvocationRequest{InvocationId: "i", FunctionId: "fid"}
		setTriggerMetadata(ir, ctx, req)
		b, err := proto.Marshal(&rpc.StreamingMessage{RequestId: "r", Content: &rpc.StreamingMessage_InvocationRequest{InvocationRequest: ir}})
		if !utf8.ValidString(trigger) || !utf8.ValidString(function) || !utf8.ValidString(topic) {
			if err == nil {
				t.Fatal("protobuf encoded a string that is not UTF-8")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var got rpc.StreamingMessage
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatalf("protobuf cannot decode the hand-encoded message: %v", err)
		}
		want := &rpc.InvocationRequest{InvocationId: "i", FunctionId: "fid", TriggerMetadata: triggerMetadata(ctx, req)}
		if gir := got.GetInvocationRequest(); !proto.Equal(gir, want) || len(gir.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("decoded\n%v\nwant\n%v", gir, want)
		}
	})
}
