'use strict';

// The two protocols' .proto files, loaded at run time from ../protos (copies
// of api/ in the polyfn repository).
//
// Messages are plain objects with the field names of the .proto files
// (`keepCase`), 64-bit integers as decimal strings (`longs: String`, so
// uint64 and sint64 values keep every digit), bytes as Buffers, enums as
// their names, every field present (`defaults`) and each oneof's chosen field
// named by a virtual property (`oneofs`: `message.content` is
// `'invocation_request'`, `typedData.data` is `'bytes'`).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.join(__dirname, '..', 'protos');

const LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});

let baetyl;
let azure;

/** The `baetyl` package: `Function` is the call protocol's service. */
function loadBaetyl() {
  if (!baetyl) {
    const definition = protoLoader.loadSync(path.join(PROTOS, 'baetyl', 'function.proto'), LOADER_OPTIONS);
    baetyl = grpc.loadPackageDefinition(definition).baetyl;
  }
  return baetyl;
}

/**
 * The `AzureFunctionsRpcMessages` package: `FunctionRpc` is the stream
 * protocol's service. NullableTypes.proto and ClaimsIdentityRpc.proto have no
 * package and are imported by their bare names.
 */
function loadAzure() {
  if (!azure) {
    const definition = protoLoader.loadSync(path.join(PROTOS, 'azure', 'FunctionRpc.proto'), {
      ...LOADER_OPTIONS,
      includeDirs: [path.join(PROTOS, 'azure')],
    });
    azure = grpc.loadPackageDefinition(definition).AzureFunctionsRpcMessages;
  }
  return azure;
}

module.exports = { LOADER_OPTIONS, PROTOS, loadAzure, loadBaetyl };
