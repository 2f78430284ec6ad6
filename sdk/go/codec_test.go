package polyfn

import (
	"math"
	"reflect"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
)

func str(s string) *rpc.TypedData    { return &rpc.TypedData{Data: &rpc.TypedData_String_{String_: s}} }
func num(n int64) *rpc.TypedData     { return &rpc.TypedData{Data: &rpc.TypedData_Int{Int: n}} }
func jsonTD(s string) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_Json{Json: s}} }

// rawEntry encodes one trigger_metadata field of an InvocationRequest with
// the given entry body.
func rawEntry(body ...[]byte) []byte {
	var e []byte
	for _, b := range body {
		e = append(e, b...)
	}
	b := protowire.AppendTag(nil, rpc.FieldInvocationRequestTriggerMetadata, protowire.BytesType)
	return protowire.AppendBytes(b, e)
}

func bytesField(n protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), v)
}

func invocationBytes(t *testing.T, ir *rpc.InvocationRequest, extra ...[]byte) []byte {
	t.Helper()
	b, err := proto.Marshal(ir)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range extra {
		b = append(b, x...)
	}
	return append(bytesField(rpc.FieldStreamingMessageRequestID, []byte("req-1")), bytesField(rpc.FieldStreamingMessageInvocationRequest, b)...)
}

// The stream codec decodes what protobuf decodes, the metadata left raw,
// and streamContext reads the same Context from either.
func TestStreamCodec(t *testing.T) {
	hostMetadata := map[string]*rpc.TypedData{
		"trigger": str("http"), "functionName": str("f"), "messageID": num(0), "messageQOS": num(0),
		"messageTopic": str(""), "messageTimestamp": num(1764399600), "deadline": str("2026-11-29T07:00:00.5Z"),
		"http": jsonTD(`{"method":"POST","path":"/function/f","query":{},"headers":{"content-type":"text/plain"}}`),
	}
	base := func() *rpc.InvocationRequest {
		return &rpc.InvocationRequest{InvocationId: "inv-1", FunctionId: "f",
			InputData:    []*rpc.ParameterBinding{{Name: "event", RpcData: &rpc.ParameterBinding_Data{Data: &rpc.TypedData{Data: &rpc.TypedData_Bytes{Bytes: []byte("payload")}}}}},
			TraceContext: &rpc.RpcTraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	}
	withMD := func(md map[string]*rpc.TypedData) *rpc.InvocationRequest {
		ir := base()
		ir.TriggerMetadata = md
		return ir
	}
	key := func(k string) []byte { return bytesField(rpc.FieldMapEntryKey, []byte(k)) }
	value := func(td []byte) []byte { return bytesField(rpc.FieldMapEntryValue, td) }
	typedStr := func(f protowire.Number, s string) []byte { return bytesField(f, []byte(s)) }
	typedInt := func(n int64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, rpc.FieldTypedDataInt, protowire.VarintType), protowire.EncodeZigZag(n))
	}
	other, _ := proto.Marshal(&rpc.StreamingMessage{RequestId: "r", Content: &rpc.StreamingMessage_InvocationCancel{InvocationCancel: &rpc.InvocationCancel{InvocationId: "x"}}})

	cases := []struct {
		name string
		b    []byte
		fast bool // decoded with the metadata left raw
	}{
		{"host metadata", invocationBytes(t, withMD(hostMetadata)), true},
		{"mqtt", invocationBytes(t, withMD(map[string]*rpc.TypedData{"trigger": str("mqtt"), "messageID": num(math.MaxInt64), "messageQOS": num(1),
			"messageTopic": str("a/b"), "messageTimestamp": num(-5)})), true},
		{"timer", invocationBytes(t, withMD(map[string]*rpc.TypedData{"trigger": str("timer"), "scheduledTime": str("2026-11-29T07:00:00.123456789Z")})), true},
		{"unusual trigger, http as a string", invocationBytes(t, withMD(map[string]*rpc.TypedData{"trigger": str("queue"), "http": str(`{"method":"GET"}`)})), true},
		{"no metadata", invocationBytes(t, base()), true},
		{"wrong types", invocationBytes(t, withMD(map[string]*rpc.TypedData{"trigger": num(3), "messageQOS": str("1"), "deadline": jsonTD("x")})), true},
		{"duplicate keys, last wins", invocationBytes(t, base(), rawEntry(key("trigger"), value(typedStr(rpc.FieldTypedDataString, "mqtt"))),
			rawEntry(key("trigger"), value(typedStr(rpc.FieldTypedDataString, "timer")))), true},
		{"entry without a value", invocationBytes(t, base(), rawEntry(key("trigger"), value(typedStr(rpc.FieldTypedDataString, "mqtt"))), rawEntry(key("trigger"))), true},
		{"empty value", invocationBytes(t, base(), rawEntry(key("messageQOS"), value(nil))), true},
		{"metadata among fields", invocationBytes(t, &rpc.InvocationRequest{InvocationId: "a"}, rawEntry(key("messageQOS"), value(typedInt(2))),
			bytesField(2, []byte("fn")), rawEntry(key("messageTopic"), value(typedStr(rpc.FieldTypedDataString, "t"))), bytesField(1, []byte("b"))), true},
		{"unknown field kept", invocationBytes(t, withMD(hostMetadata), bytesField(99, []byte("future"))), true},
		{"double value", invocationBytes(t, withMD(map[string]*rpc.TypedData{"messageQOS": {Data: &rpc.TypedData_Double{Double: 1.5}}})), false},
		{"bytes value", invocationBytes(t, withMD(map[string]*rpc.TypedData{"http": {Data: &rpc.TypedData_Bytes{Bytes: []byte("{}")}}})), false},
		{"value field twice", invocationBytes(t, base(), rawEntry(key("trigger"), value(typedStr(rpc.FieldTypedDataString, "a")), value(typedInt(1)))), false},
		{"two data fields", invocationBytes(t, base(), rawEntry(key("trigger"), value(append(typedStr(rpc.FieldTypedDataString, "a"), typedInt(1)...)))), false},
		{"invalid UTF-8 value", invocationBytes(t, base(), rawEntry(key("trigger"), value(typedStr(rpc.FieldTypedDataString, "\xff")))), false},
		{"invalid UTF-8 key", invocationBytes(t, base(), rawEntry(key("\xff"), value(typedStr(rpc.FieldTypedDataString, "a")))), false},
		{"truncated entry", invocationBytes(t, base(), []byte{0x22, 0x05, 0x0a}), false},
		{"other message", other, false},
		{"invocation request twice", append(invocationBytes(t, withMD(hostMetadata)), bytesField(rpc.FieldStreamingMessageInvocationRequest, []byte{0x0a, 0x01, 'z'})...), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if fast, ok := compareCodec(t, c.b); ok && fast != c.fast {
				t.Errorf("decoded with raw metadata: %v, want %v", fast, c.fast)
			}
		})
	}
}

// compareCodec decodes b with the stream codec and with protobuf: both fail,
// or both succeed with equal messages from which streamContext reads the
// same Context. ok is false when b is not a message; fast tells whether
// the codec left the metadata raw.
func compareCodec(t *testing.T, b []byte) (fast, ok bool) {
	t.Helper()
	var want, got rpc.StreamingMessage
	wantErr := proto.Unmarshal(b, &want)
	gotErr := streamCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(append([]byte(nil), b...))}, &got)
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("codec error %v, protobuf error %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return false, false
	}
	fast = unmarshalInvocationRequest(b, &rpc.StreamingMessage{})
	// Both give the same Context.
	if want.GetInvocationRequest() != nil {
		wi, wh := streamContext(want.GetInvocationRequest())
		gi, gh := streamContext(got.GetInvocationRequest())
		if !reflect.DeepEqual(wi, gi) || wh != gh {
			t.Errorf("context from the codec's message\n%+v %q\nfrom protobuf's\n%+v %q", gi, gh, wi, wh)
		}
	}
	// Put the raw entries back through protobuf: the messages are then equal.
	if ir := got.GetInvocationRequest(); ir != nil {
		unknown := ir.ProtoReflect().GetUnknown()
		ir.ProtoReflect().SetUnknown(nil)
		if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(unknown, ir); err != nil {
			t.Fatal(err)
		}
	}
	if !proto.Equal(&got, &want) {
		t.Errorf("codec decoded\n%v\nprotobuf decoded\n%v", &got, &want)
	}
	return fast, true
}
