'use strict';

// A small stream-protocol HOST for tests: the gRPC server a worker dials into.
//
// Host listens on 127.0.0.1 and accepts EventStream calls; each is a
// HostStream that records what the worker sends and sends what the test
// tells it to. StreamWorker starts the real runtime with the host's launch
// arguments, in its own process group.

const assert = require('node:assert/strict');
const { randomUUID } = require('node:crypto');
const grpc = require('@grpc/grpc-js');

const { loadAzure } = require('../lib/protos');
const { DEFAULT_TIMEOUT, Worker, cleanEnv, waitFor } = require('./helpers');

const MAX_MESSAGE_LENGTH = 2147483647;
const { FunctionRpc } = loadAzure();

function newId(prefix = 'id') {
  return `${prefix}-${randomUUID()}`;
}

/** One worker's EventStream, seen from the host. */
class HostStream {
  constructor(call) {
    this.rpc = call;
    this.received = [];
    this.ended = false; // the worker closed its side (or the call ended)
    call.on('data', (message) => this.received.push(message));
    call.on('end', () => {
      this.ended = true;
      call.end(); // the worker is done: end the call
    });
    call.on('error', () => {
      this.ended = true;
    });
  }

  send(message) {
    message.request_id ||= newId('req');
    this.rpc.write(message);
    return message.request_id;
  }

  close() {
    this.rpc.end();
  }

  async waitForAll(predicate, count, { timeout = DEFAULT_TIMEOUT, what = 'messages' } = {}) {
    return waitFor(
      () => {
        const found = this.received.filter(predicate);
        return found.length >= count ? found : null;
      },
      { timeout, what: `${count} x ${what}`, detail: () => `; received ${this.received.map((m) => m.content)}` },
    );
  }

  async waitFor(predicate, options) {
    return (await this.waitForAll(predicate, 1, options))[0];
  }

  waitEnded(timeout = DEFAULT_TIMEOUT) {
    return waitFor(() => this.ended, { timeout, what: 'the worker to close the stream' });
  }

  async responseTo(requestId, content, timeout) {
    const message = await this.waitFor((m) => m.request_id === requestId && m.content === content, {
      timeout,
      what: `${content} to ${requestId}`,
    });
    return message[content];
  }

  logs(predicate = () => true) {
    return this.received.filter((m) => m.content === 'rpc_log' && predicate(m.rpc_log)).map((m) => m.rpc_log);
  }

  async waitForLog(predicate, what = 'an RpcLog') {
    return (await this.waitFor((m) => m.content === 'rpc_log' && predicate(m.rpc_log), { what })).rpc_log;
  }

  // -- conversations --------------------------------------------------------------

  init() {
    const requestId = this.send({
      worker_init_request: { host_version: 'test-host', capabilities: { RpcHttpBodyOnly: 'true' } },
    });
    return this.responseTo(requestId, 'worker_init_response');
  }

  load(functionId, directory, entryPoint, name = functionId) {
    const requestId = this.send({
      function_load_request: { function_id: functionId, metadata: functionMetadata(name, directory, entryPoint) },
    });
    return this.responseTo(requestId, 'function_load_response');
  }

  /** Send an InvocationRequest; return {invocationId, requestId}. payload null: no input at all. */
  invoke(functionId, payload = '', { metadata = {}, invocationId = newId('inv') } = {}) {
    const invocation = { invocation_id: invocationId, function_id: functionId, input_data: [], trigger_metadata: {} };
    if (payload !== null) invocation.input_data.push({ name: 'event', data: { bytes: Buffer.from(payload) } });
    for (const [key, value] of Object.entries(metadata)) invocation.trigger_metadata[key] = typed(value);
    const requestId = this.send({ invocation_request: invocation });
    return { invocationId, requestId };
  }

  async result(invocationId, timeout) {
    const message = await this.waitFor(
      (m) => m.content === 'invocation_response' && m.invocation_response.invocation_id === invocationId,
      { timeout, what: `the response to ${invocationId}` },
    );
    return message.invocation_response;
  }

  call(functionId, payload, options) {
    const { invocationId } = this.invoke(functionId, payload, options);
    return this.result(invocationId);
  }
}

/** RpcFunctionMetadata as polyfn's host sends it (docs/protocols.md). */
function functionMetadata(name, directory, entryPoint) {
  return {
    name,
    directory,
    entry_point: entryPoint,
    language: 'node',
    bindings: {
      event: { type: 'polyfn', direction: 'in', data_type: 'binary' },
      $return: { type: 'polyfn', direction: 'out', data_type: 'binary' },
    },
    properties: { polyfn: '1' },
  };
}

/** The TypedData polyfn's host uses: string, int, or json for anything else. */
function typed(value) {
  if (typeof value === 'string') return { string: value };
  if (Number.isInteger(value)) return { int: String(value) };
  return { json: JSON.stringify(value) };
}

/** The gRPC server end of the stream protocol. */
class Host {
  static async start() {
    const host = new Host();
    host.port = await new Promise((resolve, reject) => {
      host.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      );
    });
    return host;
  }

  constructor() {
    this.streams = [];
    this.accepted = 0;
    this.server = new grpc.Server({
      'grpc.max_send_message_length': MAX_MESSAGE_LENGTH,
      'grpc.max_receive_message_length': MAX_MESSAGE_LENGTH,
    });
    this.server.addService(FunctionRpc.service, {
      EventStream: (call) => this.streams.push(new HostStream(call)),
    });
  }

  /** The next stream a worker opens; fails if the worker exits first. */
  accept(worker, timeout = DEFAULT_TIMEOUT) {
    return waitFor(
      () => {
        if (this.streams.length > this.accepted) return this.streams[this.accepted++];
        if (worker?.exit) assert.fail(`worker exited with ${worker.exit.code}; stderr:\n${worker.stderr}`);
        return null;
      },
      { timeout, what: 'a stream', detail: () => (worker ? `; stderr:\n${worker.stderr}` : '') },
    );
  }

  stop() {
    this.server.forceShutdown();
  }
}

/**
 * The launch arguments polyfn's host passes (docs/protocols.md), in one or
 * both spellings. 'polyfn': both spellings without the worker id, which
 * polyfn's host passes to its own runtimes in POLYFN_WORKER_ID (see StreamWorker).
 */
function launchArgs(port, workerId, requestId, spelling = 'both') {
  if (spelling === 'polyfn') {
    return launchArgs(port, workerId, requestId).filter(
      (arg) => ![workerId, '--workerId', '--functions-worker-id'].includes(arg),
    );
  }
  const classic = ['--host', '127.0.0.1', '--port', String(port), '--workerId', workerId, '--requestId', requestId];
  classic.push('--grpcMaxMessageLength', String(MAX_MESSAGE_LENGTH));
  const functions = [`--functions-uri=http://127.0.0.1:${port}/`, '--functions-worker-id', workerId];
  functions.push('--functions-request-id', requestId, '--functions-grpc-max-message-length', String(MAX_MESSAGE_LENGTH));
  return { both: [...classic, ...functions], classic, functions }[spelling];
}

/** The real runtime in stream mode, in its own process group (always kill() it). */
class StreamWorker extends Worker {
  constructor(cwd, port, { spelling = 'both', extraArgs = [], env = {} } = {}) {
    const workerId = newId('worker');
    const requestId = newId('start');
    const idEnv = spelling === 'polyfn' ? { POLYFN_WORKER_ID: workerId } : {};
    super([...launchArgs(port, workerId, requestId, spelling), ...extraArgs], { cwd, env: cleanEnv({ ...env, ...idEnv }) });
    this.workerId = workerId;
    this.requestId = requestId;
  }
}

module.exports = { Host, HostStream, StreamWorker, functionMetadata, newId };
