'use strict';

// polyfn's Node.js runtime. Started by the polyfn host as a worker process
// (bin/polyfn-node.js), in one of two modes with the same programming model:
//
// - call mode (./call.js): a gRPC server for baetyl.Function/Call serving the
//   functions listed in its config file;
// - stream mode (./stream.js): an Azure Functions language worker that dials
//   the host and serves the functions the host loads over one EventStream.
//
// Function code needs nothing from this module: context.response() makes
// HTTP responses. HttpResponse is exported for code that builds one elsewhere.

const { HttpResponse } = require('./response');
const { main } = require('./main');
const version = require('./version');

module.exports = { HttpResponse, main, version };
