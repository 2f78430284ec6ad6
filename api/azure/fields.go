package azure

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Field numbers of the messages that polyfn's host and Go SDK encode or
// decode by hand on the invocation path (trigger metadata), read from the
// generated descriptors so that they cannot drift from FunctionRpc.proto.
// (Hand-written; `make gen` leaves this file alone.)
var (
	FieldStreamingMessageRequestID         = fieldNumber(&StreamingMessage{}, "request_id")
	FieldStreamingMessageInvocationRequest = fieldNumber(&StreamingMessage{}, "invocation_request")
	FieldInvocationRequestTriggerMetadata  = fieldNumber(&InvocationRequest{}, "trigger_metadata")
	FieldTypedDataString                   = fieldNumber(&TypedData{}, "string")
	FieldTypedDataJSON                     = fieldNumber(&TypedData{}, "json")
	FieldTypedDataInt                      = fieldNumber(&TypedData{}, "int")
)

// The key and value of a map entry on the wire (every protobuf map).
const (
	FieldMapEntryKey   protowire.Number = 1
	FieldMapEntryValue protowire.Number = 2
)

func fieldNumber(m proto.Message, name string) protowire.Number {
	file_FunctionRpc_proto_init() // package variables are set before the generated init runs
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		panic("api/azure: no field " + name)
	}
	return f.Number()
}
