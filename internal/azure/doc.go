// Package azure holds what the host needs to run the HTTP functions of an
// unmodified Azure Functions app over the FunctionRpc stream: the function
// model, worker and host (function.json) indexing, the FunctionLoadRequest,
// HTTP routing (under host.json's route prefix, see ReadRoutePrefix), and
// the RpcHttp encoding of requests and decoding of responses. Apart from
// reading the app's files (IndexApp, ReadRoutePrefix), everything here is
// a pure function of its inputs; the stream code calls it.
//
// The behaviour follows the official host (Azure/azure-functions-host,
// src/WebJobs.Script/Host/HostFunctionMetadataProvider.cs,
// src/WebJobs.Script/Config/HostJsonFileConfigurationSource.cs,
// src/WebJobs.Script.WebHost/WebScriptHostHttpRoutesManager.cs,
// src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs,
// GrpcMessageExtensionUtilities.cs, Extensions/ScriptInvocationContextExtensions.cs,
// src/WebJobs.Script/Binding/Http/RawScriptResult.cs, and the HTTP trigger
// binding of Azure/azure-webjobs-sdk-extensions). Where polyfn differs on
// purpose, the function's comment says so.
//
// # Request encoding (BuildHTTP)
//
//   - url: scheme://host + escaped path + "?" + raw query. The scheme is
//     https when the connection is TLS, else the first X-Forwarded-Proto
//     value when it is http or https, else http. The host is r.Host.
//   - headers: names lower-cased; several lines of one header are joined
//     with ", " (empty values skipped; the official host joins with ",",
//     both are the same HTTP list). Go moves Host out of r.Header; it is
//     put back as "host", as ASP.NET lists it.
//   - query: keys are grouped case-insensitively (ASP.NET's query collection
//     is case-insensitive; the first spelling is kept) and the values of a
//     key are joined with "," (empty values skipped), exactly as the
//     official host's StringValues.ToString(). Without
//     UseNullableValueDictionaryForHttp a key whose joined value is empty
//     is left out of query (the official host does that); with it, it is
//     sent as an empty NullableString.
//   - params: the route parameters that matched (percent-decoded).
//   - every string is valid UTF-8: a byte of the method, url, a header, a
//     query or route parameter that does not decode as UTF-8 becomes
//     U+FFFD, as ASP.NET decodes them (Go's server passes header values and
//     the raw query as they came, and a string protobuf cannot encode would
//     end the stream to the worker, with every invocation on it).
//   - with UseNullableValueDictionaryForHttp the nullable_headers,
//     nullable_query and nullable_params maps are filled instead of the
//     plain ones, and every header is sent, even an empty one (the official
//     host applies IgnoreEmptyValuedRpcHttpHeaders to the plain map only).
//   - body: only when the request has a body (len(body) > 0).
//     With RpcHttpBodyOnly: bytes when RawHttpBodyBytes is on or the media
//     type is application/octet-stream or multipart/*, otherwise a string;
//     no rawBody.
//     Without RpcHttpBodyOnly: for application/json the body is parsed — an
//     object or array is sent as json (compacted), a JSON string as string,
//     an integer or boolean as json, another number as double, null as an
//     empty TypedData, and text that is not JSON as string; for
//     application/octet-stream and multipart/* the body is bytes; anything
//     else is a string. rawBody is the body's bytes with RawHttpBodyBytes,
//     else its text.
//     Text is decoded as UTF-8 (a UTF-8 or UTF-16 byte-order mark is
//     honoured and removed; invalid sequences become U+FFFD), like the
//     official host's StreamReader.
//
// # Trigger metadata (InvocationInput)
//
// As the HTTP trigger binding's binding data: the top-level string, number
// and boolean properties of a JSON-object body (as strings; booleans as
// "True"/"False" like .NET), then every query key except "code" (values
// joined with ","), then the route parameters, then "Query" (JSON, the last
// value of each key) and "Headers" (JSON) unless a key of that name is
// already there. Keys are case-insensitive: a later key replaces the value
// of an earlier one and keeps the earlier spelling. Without
// RpcHttpTriggerMetadataRemoved the request itself is added under the
// trigger binding's name. "Headers" has the lower-case names of RpcHttp;
// the official host keeps the names as received.
//
// # Response decoding (WriteResponse)
//
// See WriteResponse. A failed invocation (result.status Failure or
// Cancelled) is not decoded here: the caller maps it to its own error
// response before calling WriteResponse.
package azure
