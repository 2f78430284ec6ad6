package polyfn

import (
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// streamCodec is the stream's codec: protobuf, but for one thing. An
// InvocationRequest's trigger_metadata is not decoded into a map of
// TypedData messages: its entries stay, as they came, in the request's
// unknown fields, and streamContext reads the few it knows from there.
// Decoding the map cost about a fifth of a no-op invocation's CPU (a map,
// and a key, a TypedData and its value for each entry).
//
// Only entries of the shape the host sends take that path (a string key and
// a TypedData holding a string, json or int, each field once, valid UTF-8);
// a message with any other entry is decoded by protobuf, map included, so
// what a handler sees, and a malformed message's error, are unchanged.
type streamCodec struct{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

func (streamCodec) Name() string { return grpcproto.Name }

func (streamCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (streamCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rpc.StreamingMessage)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if unmarshalInvocationRequest(b, m) {
		return nil
	}
	return proto.Unmarshal(b, m)
}

// unmarshalInvocationRequest decodes b into m, an empty message, if b is
// a StreamingMessage of request_id and invocation_request only and the
// request's trigger_metadata entries all have the host's shape; it reports
// false, m untouched, otherwise.
func unmarshalInvocationRequest(b []byte, m *rpc.StreamingMessage) bool {
	var requestID, body []byte
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || (num != rpc.FieldStreamingMessageRequestID && num != rpc.FieldStreamingMessageInvocationRequest) {
			return false
		}
		v, k := protowire.ConsumeBytes(b[n:])
		if k < 0 {
			return false
		}
		if num == rpc.FieldStreamingMessageRequestID {
			requestID = v
		} else {
			if found {
				return false // a second occurrence merges into the first: protobuf's work
			}
			body, found = v, true
		}
		b = b[n+k:]
	}
	if !found || !utf8.Valid(requestID) {
		return false
	}
	ir := &rpc.InvocationRequest{}
	var meta []byte
	// Runs of the other fields are decoded by protobuf, in order, merging
	// into ir as a single decode would.
	merge := proto.UnmarshalOptions{Merge: true}
	start := 0
	for pos := 0; pos < len(body); {
		num, typ, n := protowire.ConsumeTag(body[pos:])
		if n < 0 {
			return false
		}
		k := protowire.ConsumeFieldValue(num, typ, body[pos+n:])
		if k < 0 {
			return false
		}
		end := pos + n + k
		if num == rpc.FieldInvocationRequestTriggerMetadata && typ == protowire.BytesType {
			if _, ok := metadataEntry(body[pos:end]); !ok {
				return false
			}
			if merge.Unmarshal(body[start:pos], ir) != nil {
				return false
			}
			meta = append(meta, body[pos:end]...)
			start = end
		}
		pos = end
	}
	if merge.Unmarshal(body[start:], ir) != nil {
		return false
	}
	if len(meta) > 0 {
		ir.ProtoReflect().SetUnknown(append(ir.ProtoReflect().GetUnknown(), meta...))
	}
	m.RequestId = string(requestID)
	m.Content = &rpc.StreamingMessage_InvocationRequest{InvocationRequest: ir}
	return true
}

// entry is one trigger_metadata entry of the host's shape.
type entry struct {
	key []byte
	// field is the TypedData field set (rpc.FieldTypedDataString, rpc.FieldTypedDataJSON or
	// rpc.FieldTypedDataInt), 0 for an entry without a value.
	field protowire.Number
	str   []byte
	num   int64
}

// The getters of TypedData, on an entry's value.

func (e entry) stringValue() string {
	if e.field == rpc.FieldTypedDataString {
		return string(e.str)
	}
	return ""
}

func (e entry) intValue() int64 {
	if e.field == rpc.FieldTypedDataInt {
		return e.num
	}
	return 0
}

// jsonValue is the value as the http entry is read: json or string.
func (e entry) jsonValue() string {
	if e.field == rpc.FieldTypedDataJSON || e.field == rpc.FieldTypedDataString {
		return string(e.str)
	}
	return ""
}

// triggerValue is stringValue, without allocating for the usual triggers.
func (e entry) triggerValue() string {
	if e.field == rpc.FieldTypedDataString {
		for _, t := range [...]string{TriggerHTTP, TriggerMQTT, TriggerTimer, TriggerInvoke} {
			if string(e.str) == t {
				return t
			}
		}
	}
	return e.stringValue()
}

// metadataEntry reads b, one trigger_metadata field (tag, length, entry);
// ok is false when it is not of the host's shape.
func metadataEntry(b []byte) (e entry, ok bool) {
	_, _, n := protowire.ConsumeTag(b)
	body, k := protowire.ConsumeBytes(b[n:])
	if n < 0 || k < 0 {
		return entry{}, false
	}
	var seenKey, seenValue bool
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 || typ != protowire.BytesType {
			return entry{}, false
		}
		v, k := protowire.ConsumeBytes(body[n:])
		if k < 0 {
			return entry{}, false
		}
		switch {
		case num == rpc.FieldMapEntryKey && !seenKey:
			if !utf8.Valid(v) {
				return entry{}, false
			}
			e.key, seenKey = v, true
		case num == rpc.FieldMapEntryValue && !seenValue:
			if e.field, e.str, e.num, ok = typedValue(v); !ok {
				return entry{}, false
			}
			seenValue = true
		default:
			return entry{}, false
		}
		body = body[n+k:]
	}
	return e, true
}

// typedValue reads a TypedData holding one string, json or int field.
func typedValue(b []byte) (field protowire.Number, str []byte, num int64, ok bool) {
	if len(b) == 0 {
		return 0, nil, 0, true // no data set
	}
	f, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, nil, 0, false
	}
	b = b[n:]
	switch {
	case (f == rpc.FieldTypedDataString || f == rpc.FieldTypedDataJSON) && typ == protowire.BytesType:
		v, k := protowire.ConsumeBytes(b)
		if k < 0 || k != len(b) || !utf8.Valid(v) {
			return 0, nil, 0, false
		}
		return f, v, 0, true
	case f == rpc.FieldTypedDataInt && typ == protowire.VarintType:
		v, k := protowire.ConsumeVarint(b)
		if k < 0 || k != len(b) {
			return 0, nil, 0, false
		}
		return f, nil, protowire.DecodeZigZag(v), true
	}
	return 0, nil, 0, false
}

// rawMetadata calls fn for each trigger_metadata entry the stream codec
// left in req's unknown fields, in order.
func rawMetadata(req *rpc.InvocationRequest, fn func(entry)) {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		k := protowire.ConsumeFieldValue(num, typ, b[n:])
		if k < 0 {
			return
		}
		if num == rpc.FieldInvocationRequestTriggerMetadata && typ == protowire.BytesType {
			if e, ok := metadataEntry(b[:n+k]); ok {
				fn(e)
			}
		}
		b = b[n+k:]
	}
}
