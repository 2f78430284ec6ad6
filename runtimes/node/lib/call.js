'use strict';

// Call mode: a gRPC server for baetyl.Function/Call serving the functions of
// the config file.
//
// The reply is the request message with Payload replaced (every other field,
// unknown ones included, is echoed byte for byte). An HTTP response object
// sends its status and headers as the response header metadata
// polyfn-response-bin (JSON {status, headers}) and its body as Payload.
// Failures are gRPC errors with status UNKNOWN and these details:
//
//   [UserCodeInvoke] <ErrorType>: <message>   the handler threw or rejected
//   [UserCodeReturn] <ErrorType>: <message>   its result cannot be encoded
//   function not found: <name>                no such function in this worker
//
// Details longer than 2 KiB (UTF-8) are cut and end with " [truncated]"; the
// stack is in the logs.
//
// On SIGTERM or SIGINT the server stops accepting calls, gives the calls in
// flight up to server.grace seconds, and run() resolves with 0. A second
// signal exits at once with status 1.

const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');

const { ADDRESS_ENV, ConfigError, MAX_MESSAGE_LENGTH, loadConfig } = require('./config');
const { CONTEXT_METADATA_KEY, callContext } = require('./context');
const { errorSummary, runHandler, userStack } = require('./invoke');
const { IdleCollector } = require('./idle');
const { loadHandler } = require('./loader');
const logs = require('./logs');
const { decodeEvent, encodeOutcome } = require('./payload');
const { loadBaetyl } = require('./protos');
const { onStopSignals } = require('./signals');
const VERSION = require('./version');
const { WireError, replaceBytesField } = require('./wire');

const { log } = logs;

const RESPONSE_METADATA_KEY = 'polyfn-response-bin';
const MAX_DETAILS_BYTES = 2048;
const PAYLOAD_FIELD = 4;

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_NO_ADDRESS = 2;

const SERVER_OPTIONS = Object.freeze({
  'grpc.max_send_message_length': MAX_MESSAGE_LENGTH,
  'grpc.max_receive_message_length': MAX_MESSAGE_LENGTH,
});

/**
 * Run call mode with the config file at configPath; resolve with the exit
 * status. onListening, when given, is called once the server listens (a
 * standby worker tells the host).
 */
async function run(configPath, onListening) {
  let config;
  try {
    config = loadConfig(configPath);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log.error(err.message);
    return EXIT_FAILED;
  }
  const address = config.server.address;
  if (!address) {
    log.error(`no address to listen on: set ${ADDRESS_ENV} (127.0.0.1:PORT or unix:/path) or server.address in ${configPath}`);
    return EXIT_NO_ADDRESS;
  }
  log.info(
    `polyfn node runtime ${VERSION} starting in call mode${config.name ? ` as ${config.name}` : ''} (node ${process.versions.node})`,
  );

  const functions = new Map();
  for (const fn of config.functions) {
    try {
      functions.set(fn.name, await loadHandler(fn));
    } catch (err) {
      log.error(loadFailure(fn, err), { functionName: fn.name });
      return EXIT_FAILED;
    }
    log.info(`loaded function ${fn.name} (handler ${fn.handler})`, { functionName: fn.name });
  }

  const calls = new Calls(functions);
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(rawCallService(), { Call: (call, callback) => calls.call(call, callback) });
  let port;
  try {
    port = await bind(server, address);
  } catch (err) {
    log.error(`cannot listen on ${address}: ${err.message}`);
    return EXIT_FAILED;
  }
  const where = address.startsWith('unix:') ? address : `${address.slice(0, address.lastIndexOf(':'))}:${port}`;
  log.info(`listening on ${where}`);
  if (onListening) onListening();

  await new Promise((resolve) => onStopSignals(resolve));
  const grace = config.server.grace;
  log.info(`stopping: no new calls, up to ${grace}s for calls in flight`);
  const drained = await shutdown(server, grace * 1000);
  removeUnixSocket(address);
  if (!drained) {
    log.warn(`${calls.running} invocation(s) still running after the grace period: exiting anyway`);
  }
  log.info('stopped');
  return EXIT_OK;
}

/** The message logged when a function cannot be loaded (with the module's stack when it threw). */
function loadFailure(fn, err) {
  const message = `function ${fn.name}: cannot load handler '${fn.handler}': ${err.message}`;
  return err.cause !== undefined ? `${message}\n${userStack(err.cause)}` : message;
}

/**
 * baetyl.Function with the request kept raw next to its decoded form
 * ({raw, message}) and the reply passed through as encoded bytes.
 */
function rawCallService() {
  const base = loadBaetyl().Function.service;
  return {
    Call: {
      ...base.Call,
      requestDeserialize: (raw) => ({ raw, message: base.Call.requestDeserialize(raw) }),
      responseSerialize: (encoded) => encoded,
    },
  };
}

function bind(server, address) {
  if (address.startsWith('unix:')) removeUnixSocket(address);
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(err);
      else resolve(port);
    });
  });
}

/** Graceful shutdown up to timeoutMs, then forced; resolves with whether every call finished. */
function shutdown(server, timeoutMs) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve(false);
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function removeUnixSocket(address) {
  if (!address.startsWith('unix:')) return;
  let file = address.slice('unix:'.length);
  if (file.startsWith('//')) file = file.slice(2);
  try {
    if (fs.statSync(file).isSocket()) fs.unlinkSync(file);
  } catch {
    // not there: nothing to remove
  }
}

/** The Call method. */
class Calls {
  constructor(functions) {
    this.functions = functions;
    this.running = 0;
    this.idleCollector = new IdleCollector();
  }

  async call(call, callback) {
    const { raw, message } = call.request;
    const fn = this.functions.get(message.FunctionName);
    if (!fn) {
      callback({ code: grpc.status.UNKNOWN, details: details(`function not found: ${message.FunctionName}`) });
      return;
    }
    this.running++;
    this.idleCollector.started();
    try {
      const scope = new logs.Scope(fn.name, message.FunctionInvokeID);
      const controller = new AbortController();
      // Abort listeners run in the invocation's scope, so that their output is tagged.
      if (call.cancelled) controller.abort();
      else call.on('cancelled', () => logs.runInScope(scope, () => controller.abort()));
      const deadline = call.getDeadline();
      const context = callContext(message, call.metadata.get(CONTEXT_METADATA_KEY)[0], {
        scope,
        signal: controller.signal,
        deadline: deadline instanceof Date ? deadline.getTime() : Number.isFinite(deadline) ? deadline : null,
      });
      const event = decodeEvent(message.Payload);
      const outcome = await logs.runInScope(scope, () => runHandler(fn.handler, event, context));
      logs.endScope(scope); // the function's partial lines come before its stack
      if (!outcome.ok) {
        logs.emit('error', userStack(outcome.error), { source: 'user', scope });
        callback({ code: grpc.status.UNKNOWN, details: details(`[UserCodeInvoke] ${errorSummary(outcome.error)}`) });
        return;
      }
      let result;
      try {
        result = encodeOutcome(outcome.value);
      } catch (err) {
        const error = `[UserCodeReturn] ${errorSummary(err)}`;
        logs.emit('error', `cannot encode the return value: ${error}`, { source: 'user', scope });
        callback({ code: grpc.status.UNKNOWN, details: details(error) });
        return;
      }
      if (result.http) {
        const header = new grpc.Metadata();
        header.set(RESPONSE_METADATA_KEY, Buffer.from(JSON.stringify(result.http), 'utf8'));
        call.sendMetadata(header);
      }
      callback(null, reply(raw, message, result.payload));
    } catch (err) {
      log.error(`invocation ${message.FunctionInvokeID} of ${fn.name}: internal error: ${userStack(err)}`, {
        functionName: fn.name,
      });
      callback({ code: grpc.status.INTERNAL, details: details(`internal error: ${errorSummary(err)}`) });
    } finally {
      this.running--;
      this.idleCollector.ended();
    }
  }
}

/** The encoded reply: the request's bytes with Payload replaced. */
function reply(raw, message, payload) {
  try {
    return replaceBytesField(raw, PAYLOAD_FIELD, payload);
  } catch (err) {
    if (!(err instanceof WireError)) throw err;
    // Not reachable for a request grpc decoded; re-encode the known fields.
    return loadBaetyl().Function.service.Call.responseSerialize({ ...message, Payload: payload });
  }
}

/** gRPC status details, cut to a size every client accepts in a trailer. */
function details(text) {
  const data = Buffer.from(text, 'utf8');
  if (data.length <= MAX_DETAILS_BYTES) return text;
  return `${new TextDecoder().decode(data.subarray(0, MAX_DETAILS_BYTES)).replace(/\uFFFD+$/, '')} [truncated]`;
}

module.exports = { Calls, EXIT_FAILED, EXIT_NO_ADDRESS, EXIT_OK, RESPONSE_METADATA_KEY, SERVER_OPTIONS, bind, details, rawCallService, run };
