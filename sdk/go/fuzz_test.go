package polyfn

import (
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// FuzzStreamCodec decodes arbitrary bytes with the stream codec, which reads
// an InvocationRequest's trigger_metadata by hand, and with protobuf-go:
// both must fail, or decode the same message from which the same Context is
// read (compareCodec).
func FuzzStreamCodec(f *testing.F) {
	msg := func(ir *rpc.InvocationRequest, extra ...[]byte) []byte {
		b, err := proto.Marshal(ir)
		if err != nil {
			f.Fatal(err)
		}
		for _, x := range extra {
			b = append(b, x...)
		}
		return append(bytesField(rpc.FieldStreamingMessageRequestID, []byte("req-1")), bytesField(rpc.FieldStreamingMessageInvocationRequest, b)...)
	}
	key := func(k string) []byte { return bytesField(rpc.FieldMapEntryKey, []byte(k)) }
	value := func(td []byte) []byte { return bytesField(rpc.FieldMapEntryValue, td) }
	typedInt := protowire.AppendVarint(protowire.AppendTag(nil, rpc.FieldTypedDataInt, protowire.VarintType), protowire.EncodeZigZag(-3))
	base := &rpc.InvocationRequest{InvocationId: "inv-1", FunctionId: "f",
		InputData:    []*rpc.ParameterBinding{{Name: "event", RpcData: &rpc.ParameterBinding_Data{Data: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte("payload")}}}}},
		TraceContext: &rpc.RpcTraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	withMD := proto.Clone(base).(*rpc.InvocationRequest)
	withMD.TriggerMetadata = map[string]*rpc.TypedData{
		"trigger": str("http"), "functionName": str("f"), "messageID": num(math.MaxInt64), "messageQOS": num(1),
		"messageTopic": str("a/b"), "messageTimestamp": num(-5), "deadline": str("2026-11-29T07:00:00.5Z"),
		"scheduledTime": str("2026-11-29T07:00:00.123456789Z"), "http": jsonTD(`{"method":"POST","path":"/function/f","query":{},"headers":{}}`),
		"odd": {Data: &rpc.TypedData_Double{Double: 1.5}},
	}
	other, _ := proto.Marshal(&rpc.StreamingMessage{RequestId: "r", Content: &rpc.StreamingMessage_InvocationCancel{InvocationCancel: &rpc.InvocationCancel{InvocationId: "x"}}})
	for _, b := range [][]byte{
		msg(base),
		msg(withMD),
		msg(base, rawEntry(key("trigger"), value(bytesField(rpc.FieldTypedDataString, []byte("mqtt")))), rawEntry(key("trigger"))),
		msg(base, rawEntry(key("messageQOS"), value(typedInt)), bytesField(2, []byte("fn")), rawEntry(key("messageQOS"), value(nil))),
		msg(base, rawEntry(key("trigger"), value(bytesField(rpc.FieldTypedDataString, []byte("\xff"))))),
		msg(base, []byte{0x22, 0x05, 0x0a}),
		append(msg(withMD), bytesField(rpc.FieldStreamingMessageInvocationRequest, []byte{0x0a, 0x01, 'z'})...),
		other,
		nil,
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		compareCodec(t, b)
	})
}
