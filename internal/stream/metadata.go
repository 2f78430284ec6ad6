package stream

import (
	"context"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/invoke"
)

// setTriggerMetadata gives ir the trigger_metadata that carries a polyfn
// function's invocation context (docs/protocols.md, "polyfn functions over
// the stream"): trigger, functionName, messageID, messageQOS, messageTopic,
// messageTimestamp, and deadline, scheduledTime (timer) and http (HTTP) when
// they apply.
//
// The entries are encoded here, in the map's wire format, and put in ir's
// unknown fields, which marshalling copies as they are: on the wire this is
// the trigger_metadata map field, and every worker decodes it as such. A
// map of TypedData messages would cost a dozen allocations and the
// protobuf runtime's reflection over the map twice (size, then encode) on
// every invocation. ir.TriggerMetadata itself stays empty.
//
// Strings that are not valid UTF-8 (a topic, say) take the map: protobuf
// refuses to encode them, and so the request fails as it always did.
func setTriggerMetadata(ir *rpc.InvocationRequest, ctx context.Context, req *invoke.Request) {
	if !utf8.ValidString(string(req.Trigger)) || !utf8.ValidString(req.Function) || !utf8.ValidString(req.Topic) {
		ir.TriggerMetadata = triggerMetadata(ctx, req)
		return
	}
	b := make([]byte, 0, 320)
	b = appendStringEntry(b, "trigger", string(req.Trigger))
	b = appendStringEntry(b, "functionName", req.Function)
	b = appendIntEntry(b, "messageID", int64(req.MessageID))
	b = appendIntEntry(b, "messageQOS", int64(req.QOS))
	b = appendStringEntry(b, "messageTopic", req.Topic)
	b = appendIntEntry(b, "messageTimestamp", req.Timestamp.Unix())
	var scratch [64]byte
	if d, ok := ctx.Deadline(); ok {
		b = appendBytesEntry(b, "deadline", rpc.FieldTypedDataString, d.UTC().AppendFormat(scratch[:0], time.RFC3339Nano))
	}
	if req.Trigger == invoke.TriggerTimer {
		b = appendBytesEntry(b, "scheduledTime", rpc.FieldTypedDataString, req.Timestamp.UTC().AppendFormat(scratch[:0], time.RFC3339Nano))
	}
	if req.HTTP != nil {
		b = appendBytesEntry(b, "http", rpc.FieldTypedDataJSON, req.HTTP.AppendJSON(make([]byte, 0, 256)))
	}
	ir.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
}

// triggerMetadata is the same metadata as a map.
func triggerMetadata(ctx context.Context, req *invoke.Request) map[string]*rpc.TypedData {
	str := func(s string) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_String_{String_: s}} }
	num := func(n int64) *rpc.TypedData { return &rpc.TypedData{Data: &rpc.TypedData_Int{Int: n}} }
	md := map[string]*rpc.TypedData{
		"trigger":          str(string(req.Trigger)),
		"functionName":     str(req.Function),
		"messageID":        num(int64(req.MessageID)),
		"messageQOS":       num(int64(req.QOS)),
		"messageTopic":     str(req.Topic),
		"messageTimestamp": num(req.Timestamp.Unix()),
	}
	if d, ok := ctx.Deadline(); ok {
		md["deadline"] = str(d.UTC().Format(time.RFC3339Nano))
	}
	if req.Trigger == invoke.TriggerTimer {
		md["scheduledTime"] = str(req.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	if req.HTTP != nil {
		md["http"] = &rpc.TypedData{Data: &rpc.TypedData_Json{Json: string(req.HTTP.AppendJSON(nil))}}
	}
	return md
}

// appendStringEntry appends the map entry key → TypedData{string: value}.
func appendStringEntry(b []byte, key, value string) []byte {
	inner := protowire.SizeTag(rpc.FieldTypedDataString) + protowire.SizeBytes(len(value))
	b = appendEntryHead(b, key, inner)
	b = protowire.AppendTag(b, rpc.FieldTypedDataString, protowire.BytesType)
	return protowire.AppendString(b, value)
}

// appendBytesEntry appends the map entry key → TypedData whose string-typed
// field (string or json) holds value.
func appendBytesEntry(b []byte, key string, field protowire.Number, value []byte) []byte {
	inner := protowire.SizeTag(field) + protowire.SizeBytes(len(value))
	b = appendEntryHead(b, key, inner)
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

// appendIntEntry appends the map entry key → TypedData{int: value}.
func appendIntEntry(b []byte, key string, value int64) []byte {
	zz := protowire.EncodeZigZag(value)
	inner := protowire.SizeTag(rpc.FieldTypedDataInt) + protowire.SizeVarint(zz)
	b = appendEntryHead(b, key, inner)
	b = protowire.AppendTag(b, rpc.FieldTypedDataInt, protowire.VarintType)
	return protowire.AppendVarint(b, zz)
}

// appendEntryHead appends a map entry's tag and length, its key, and the
// tag and length of its value, a TypedData of inner bytes that the caller
// appends next.
func appendEntryHead(b []byte, key string, inner int) []byte {
	n := protowire.SizeTag(rpc.FieldMapEntryKey) + protowire.SizeBytes(len(key)) + protowire.SizeTag(rpc.FieldMapEntryValue) + protowire.SizeBytes(inner)
	b = protowire.AppendTag(b, rpc.FieldInvocationRequestTriggerMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, rpc.FieldMapEntryKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, rpc.FieldMapEntryValue, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(inner))
}
