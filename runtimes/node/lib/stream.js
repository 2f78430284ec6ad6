'use strict';

// Stream mode: the worker side of the Azure Functions language-worker protocol.
//
// The host is the gRPC server. The worker dials --host:--port (or
// --functions-uri) and opens one bidirectional
// AzureFunctionsRpcMessages.FunctionRpc/EventStream; its first message is
// StartStream{worker_id}. Everything else travels on that stream:
//
// - WorkerInitRequest → WorkerInitResponse (capabilities
//   HandlesInvocationCancelMessage, HandlesWorkerTerminateMessage, polyfn);
// - FunctionsMetadataRequest → use_default_metadata_indexing: the host indexes;
// - FunctionLoadRequest (and …Collection) → the handler named by
//   metadata.entry_point is loaded from metadata.directory with the call-mode
//   loader and kept under function_id; a failure is reported in the response
//   and the worker keeps running;
// - InvocationRequest → the same event and context as call mode (input_data
//   `event` is the payload, trigger_metadata the context keys) →
//   InvocationResponse;
// - InvocationCancel → context.signal is aborted; the answer, Cancelled, goes
//   out when the handler has settled (a handler that ignores the signal runs
//   to its end first);
// - WorkerTerminate{grace_period} (or SIGTERM/SIGINT, 30 s grace): no new
//   invocations, those in flight get up to the grace period, then the worker
//   closes the stream and exits 0;
// - WorkerStatusRequest, FunctionEnvironmentReloadRequest, WorkerWarmupRequest
//   are answered; other messages are ignored.
//
// Every response echoes the request_id of the message it answers.
//
// Everything outgoing goes through one Outbox, which writes the stream in
// order and waits for 'drain' when grpc's buffer is full. Invocations run
// concurrently on the event loop.
//
// Logs: once the host has answered (its first message), every log record goes
// to the host as an RpcLog; before that and after the stream closes, they are
// JSON lines on stderr as in call mode. A function's records are sent before
// its InvocationResponse.
//
// If the stream breaks (the host went away, or cannot be reached), the worker
// logs why on stderr and run() resolves with 1.

const grpc = require('@grpc/grpc-js');

const { DEFAULT_GRACE } = require('./config');
const { streamContext } = require('./context');
const { errorMessage, errorType, runHandler, userStack } = require('./invoke');
const { IdleCollector } = require('./idle');
const { loadHandler } = require('./loader');
const logs = require('./logs');
const { EMPTY, decodeEvent, encodeOutcome } = require('./payload');
const { loadAzure } = require('./protos');
const { onStopSignals } = require('./signals');
const VERSION = require('./version');

const { log } = logs;

const CAPABILITIES = Object.freeze({
  HandlesInvocationCancelMessage: 'true',
  HandlesWorkerTerminateMessage: 'true',
  polyfn: '1',
});
const EVENT_BINDING = 'event';
// RpcLog.category of the runtime's own messages that name no function.
const RUNTIME_CATEGORY = 'polyfn-runtime';
// After closing its side of the stream, how long to wait for the host to close its own.
const CLOSE_TIMEOUT_MS = 2000;

const EXIT_OK = 0;
const EXIT_FAILED = 1;

const RPC_LEVELS = Object.freeze({ debug: 'Debug', info: 'Information', warning: 'Warning', error: 'Error' });
const LEVEL_NAMES = Object.freeze({ Trace: 'debug', Debug: 'debug', Information: 'info', Warning: 'warning' });

function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Resolves with `value` after ms (the timer is cleared by the returned cancel). */
function delay(ms, value) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, value);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Run stream mode; resolve with the exit status. */
function run(options, { grace = DEFAULT_GRACE } = {}) {
  log.info(
    `polyfn node runtime ${VERSION} starting in stream mode: host ${options.target}, worker ${options.workerId} (node ${process.versions.node})`,
  );
  return new StreamWorker(options, { grace }).run();
}

const END = Symbol('end of stream');

/** The only writer of the stream: writes in order, waits for 'drain' when grpc's buffer is full. */
class Outbox {
  constructor(call, spill) {
    this.call = call;
    this.spill = spill; // where messages go once the stream is closed or broken
    this.queue = [];
    this.blocked = false;
    this.closed = false;
    this.closing = false;
    this.ended = deferred();
  }

  send(message) {
    if (this.closed) {
      this.spill(message);
      return;
    }
    this.queue.push(message);
    this.flush();
  }

  flush() {
    while (!this.blocked && !this.closed && this.queue.length > 0) {
      const message = this.queue.shift();
      if (message === END) {
        this.closed = true;
        this.call.end();
        this.ended.resolve();
        this.discard();
        return;
      }
      if (!this.call.write(message)) {
        this.blocked = true;
        this.call.once('drain', () => {
          this.blocked = false;
          this.flush();
        });
      }
    }
  }

  /** Close our side of the stream once everything queued is written; resolves when it is. */
  close() {
    if (!this.closing) {
      this.closing = true;
      this.queue.push(END);
      this.flush();
    }
    return this.ended.promise;
  }

  /** The stream is gone: what is queued, and anything sent later, is spilled. */
  discard() {
    this.closed = true;
    const queued = this.queue;
    this.queue = [];
    for (const message of queued) if (message !== END) this.spill(message);
    this.ended.resolve();
  }
}

/** A logs sink that sends each record to the host as an RpcLog. */
class RpcLogSink {
  constructor(outbox) {
    this.outbox = outbox;
  }

  emit(level, msg, { source, functionName = null, invocationId = null }) {
    const record = { level: RPC_LEVELS[level] ?? 'Error', message: msg };
    if (source === 'user') {
      record.log_category = 'User';
      record.category = functionName || '';
      record.invocation_id = invocationId || '';
    } else {
      record.log_category = 'System';
      record.category = functionName || RUNTIME_CATEGORY;
    }
    this.outbox.send({ request_id: '', rpc_log: record });
  }
}

/** A log record that could not reach the host goes to stderr. */
function spill(message) {
  const record = message?.rpc_log;
  if (!record) return;
  const user = record.log_category === 'User';
  logs.stderrSink.emit(LEVEL_NAMES[record.level] ?? 'error', record.message, {
    source: user ? 'user' : 'runtime',
    functionName: record.category && record.category !== RUNTIME_CATEGORY ? record.category : null,
    invocationId: record.invocation_id || null,
  });
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

function success() {
  return { status: 'Success' };
}

function failure(type, message) {
  return { status: 'Failure', exception: { type, message } };
}

/** One connection to the host: reads, dispatches and answers its messages. */
class StreamWorker {
  constructor(options, { grace = DEFAULT_GRACE } = {}) {
    this.options = options;
    this.grace = grace;
    this.stopGrace = grace;
    this.functions = new Map(); // function_id → loaded function
    this.loading = new Map(); // function_id → promise of its FunctionLoadResponse
    this.inflight = new Map(); // invocation_id → invocation
    this.running = 0; // invocations started and not answered yet
    this.idleCollector = new IdleCollector();
    this.stopping = false;
    this.closing = false; // our side of the stream is closed or closing
    this.accepted = false; // the host has sent its first message
    this.brokenReason = null;
    this.stopRequested = deferred();
    this.broken = deferred();
    this.hostEnded = deferred();
    this.idle = deferred();
    this.handlers = {
      invocation_request: this.onInvocation,
      invocation_cancel: this.onCancel,
      worker_init_request: this.onInit,
      functions_metadata_request: this.onFunctionsMetadata,
      function_load_request: this.onLoad,
      function_load_request_collection: this.onLoadCollection,
      worker_terminate: this.onTerminate,
      worker_status_request: this.onStatus,
      function_environment_reload_request: this.onEnvironmentReload,
      worker_warmup_request: this.onWarmup,
    };
  }

  // -- the connection ---------------------------------------------------------

  async run() {
    const { FunctionRpc } = loadAzure();
    const length = this.options.maxMessageLength;
    const client = new FunctionRpc(this.options.target, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': length,
      'grpc.max_receive_message_length': length,
      // The host is local: never go through an HTTP proxy from the environment.
      'grpc.enable_http_proxy': 0,
    });
    const call = client.EventStream();
    /** @type {Outbox} */
    this.outbox = new Outbox(call, spill);
    call.on('data', (message) => this.onMessage(message));
    call.on('error', (err) => {
      this.hostEnded.resolve();
      if (!this.closing) this.fail(`${statusName(err.code)}: ${err.details}`);
    });
    call.on('end', () => {
      this.hostEnded.resolve();
      if (!this.stopping) this.fail('the host closed the stream');
    });
    call.on('status', () => this.hostEnded.resolve());
    onStopSignals(() => this.requestStop(this.grace));

    this.outbox.send({ request_id: this.options.requestId, start_stream: { worker_id: this.options.workerId } });
    try {
      return await this.serve();
    } finally {
      logs.setSink(null);
      this.outbox.discard();
      client.close();
    }
  }

  async serve() {
    const first = await Promise.race([
      this.stopRequested.promise.then(() => 'stop'),
      this.broken.promise.then(() => 'broken'),
    ]);
    if (first === 'broken') return this.broke();
    const status = await this.drain();
    if (status !== EXIT_OK) return status;
    // Everything queued goes out, then our side of the stream is closed.
    this.closing = true;
    const closeTimeout = delay(CLOSE_TIMEOUT_MS, 'timeout');
    await Promise.race([this.outbox.close(), closeTimeout.promise]);
    closeTimeout.cancel();
    if (this.brokenReason !== null) return this.broke();
    logs.setSink(null);
    // Let the host end the call, so that it sees a clean end rather than a cancel.
    const endTimeout = delay(CLOSE_TIMEOUT_MS);
    await Promise.race([this.hostEnded.promise, endTimeout.promise]);
    endTimeout.cancel();
    if (this.running) {
      log.warn(`${this.running} invocation(s) still running: exiting without waiting for them`);
    }
    log.info('stopped');
    return EXIT_OK;
  }

  /** Wait for the invocations in flight, up to the grace period. */
  async drain() {
    const grace = this.stopGrace;
    log.info(`stopping: no new invocations, up to ${grace}s for ${this.running} in flight`);
    if (this.running) {
      const timeout = delay(grace * 1000, 'timeout');
      const outcome = await Promise.race([
        this.idle.promise.then(() => 'idle'),
        this.broken.promise.then(() => 'broken'),
        timeout.promise,
      ]);
      timeout.cancel();
      if (outcome === 'broken') return this.broke();
      if (this.running) log.warn(`${this.running} invocation(s) still running after the grace period`);
    }
    return EXIT_OK;
  }

  broke() {
    logs.setSink(null);
    this.outbox.discard();
    log.error(`lost the stream to the host at ${this.options.target}: ${this.brokenReason}; exiting`);
    return EXIT_FAILED;
  }

  fail(reason) {
    if (this.brokenReason === null) {
      this.brokenReason = reason;
      this.broken.resolve();
    }
  }

  requestStop(grace) {
    if (this.stopping) return;
    this.stopping = true;
    this.stopGrace = grace;
    if (this.running === 0) this.idle.resolve();
    this.stopRequested.resolve();
  }

  send(message) {
    this.outbox.send(message);
  }

  onMessage(message) {
    if (!this.accepted) {
      // The host accepted the stream: logs go to it from now on.
      this.accepted = true;
      logs.setSink(new RpcLogSink(this.outbox));
    }
    const kind = message.content;
    const handler = this.handlers[kind];
    if (!handler) {
      log.debug(`ignoring a ${kind} message`);
      return;
    }
    try {
      handler.call(this, message);
    } catch (err) {
      log.error(`cannot handle a ${kind} message: ${userStack(err)}`);
    }
  }

  // -- init, metadata, status, environment ----------------------------------------

  workerMetadata() {
    return {
      runtime_name: 'node',
      runtime_version: process.versions.node,
      worker_version: VERSION,
      worker_bitness: /64/.test(process.arch) ? '64' : '32',
    };
  }

  onInit(message) {
    const request = message.worker_init_request;
    log.info(`initialized by host ${request.host_version || '(no version)'}`);
    this.send({
      request_id: message.request_id,
      worker_init_response: {
        worker_version: VERSION,
        capabilities: CAPABILITIES,
        result: success(),
        worker_metadata: this.workerMetadata(),
      },
    });
  }

  onFunctionsMetadata(message) {
    // polyfn's functions are indexed by the host and sent in FunctionLoadRequests.
    this.send({
      request_id: message.request_id,
      function_metadata_response: { use_default_metadata_indexing: true, result: success() },
    });
  }

  onStatus(message) {
    this.send({ request_id: message.request_id, worker_status_response: {} });
  }

  onWarmup(message) {
    this.send({ request_id: message.request_id, worker_warmup_response: { result: success() } });
  }

  onEnvironmentReload(message) {
    const request = message.function_environment_reload_request;
    const variables = request.environment_variables ?? {};
    for (const key of Object.keys(process.env)) delete process.env[key];
    Object.assign(process.env, variables);
    let result = success();
    const directory = request.function_app_directory;
    if (directory) {
      try {
        process.chdir(directory);
      } catch (err) {
        log.error(`cannot change to the function app directory '${directory}': ${err.message}`);
        result = failure(errorType(err), err.message);
      }
    }
    log.info(`environment reloaded (${Object.keys(variables).length} variables)`);
    this.send({
      request_id: message.request_id,
      function_environment_reload_response: {
        worker_metadata: this.workerMetadata(),
        capabilities: CAPABILITIES,
        result,
      },
    });
  }

  onTerminate(message) {
    const period = message.worker_terminate.grace_period;
    let grace = this.grace;
    if (period) grace = Math.max(0, Number(period.seconds) + period.nanos / 1e9);
    log.info(`received WorkerTerminate (grace period ${grace}s)`);
    this.requestStop(grace);
  }

  // -- loading ------------------------------------------------------------------------

  onLoad(message) {
    this.startLoad(message.function_load_request).then((response) => {
      this.send({ request_id: message.request_id, function_load_response: response });
    });
  }

  onLoadCollection(message) {
    const requests = message.function_load_request_collection.function_load_requests;
    Promise.all(requests.map((request) => this.startLoad(request))).then((responses) => {
      this.send({
        request_id: message.request_id,
        function_load_response_collection: { function_load_responses: responses },
      });
    });
  }

  /** Load a function; the promise resolves with its FunctionLoadResponse once it is registered. */
  startLoad(request) {
    const functionId = request.function_id;
    const metadata = request.metadata ?? {};
    const fn = { name: metadata.name || functionId, handler: metadata.entry_point, codedir: metadata.directory || '.' };
    const done = loadHandler(fn).then(
      (loaded) => {
        log.info(`loaded function ${fn.name} (handler ${fn.handler})`, { functionName: fn.name });
        this.functions.set(functionId, loaded);
        return { function_id: functionId, result: success() };
      },
      (err) => ({ function_id: functionId, result: { status: 'Failure', exception: this.loadFailed(fn, err) } }),
    );
    const registered = done.finally(() => {
      if (this.loading.get(functionId) === registered) this.loading.delete(functionId);
    });
    this.loading.set(functionId, registered);
    return registered;
  }

  loadFailed(fn, err) {
    const cause = err?.cause;
    const message = `function ${fn.name}: cannot load handler '${fn.handler}': ${errorMessage(err)}`;
    const trace = cause !== undefined ? userStack(cause) : '';
    log.error(trace ? `${message}\n${trace}` : message, { functionName: fn.name });
    return {
      type: cause !== undefined ? errorType(cause) : errorType(err),
      message: errorMessage(err),
      stack_trace: trace,
      is_user_exception: cause !== undefined,
    };
  }

  // -- invocations ----------------------------------------------------------------------

  onInvocation(message) {
    const request = message.invocation_request;
    const fn = this.functions.get(request.function_id);
    if (!fn || this.stopping) {
      this.refuse(message);
      return;
    }
    const invocation = {
      id: request.invocation_id,
      fn,
      requestId: message.request_id,
      scope: new logs.Scope(fn.name, request.invocation_id),
      controller: null, // made when the function reads context.signal, or on cancel
      cancelled: false,
    };
    this.running++;
    this.idleCollector.started();
    this.inflight.set(invocation.id, invocation);
    this.invoke(invocation, request).catch((err) => {
      // A bug of the runtime, not of the function.
      log.error(`invocation ${invocation.id}: internal error: ${userStack(err)}`, { functionName: fn.name });
      const response = this.exception(invocation, err, userStack(err));
      response.invocation_response.result.exception.is_user_exception = false;
      this.finish(invocation, response);
    });
  }

  refuse(message) {
    const request = message.invocation_request;
    let result;
    if (this.stopping) {
      result = failure('WorkerStopping', 'the worker is stopping: it takes no new invocations');
    } else if (this.loading.has(request.function_id)) {
      // Sent before the load's response: run it once the function is loaded.
      this.loading.get(request.function_id).then(() => this.onInvocation(message));
      return;
    } else {
      result = failure('FunctionNotFound', `function not found: ${request.function_id}`);
    }
    this.send({
      request_id: message.request_id,
      invocation_response: { invocation_id: request.invocation_id, result },
    });
  }

  async invoke(invocation, request) {
    const { fn, scope } = invocation;
    const context = streamContext(triggerMetadata(request), {
      functionName: fn.name,
      invocationId: invocation.id,
      scope,
      signal: () => controllerOf(invocation).signal,
    });
    const event = decodeEvent(eventPayload(request));
    const outcome = await logs.runInScope(scope, () => runHandler(fn.handler, event, context));
    logs.endScope(scope); // the function's partial lines come before its stack and its response
    let response;
    if (invocation.cancelled) {
      if (outcome.ok) {
        log.warn(
          `invocation ${invocation.id} of ${fn.name} was cancelled but ran to its end (it does not watch context.signal): reported as cancelled`,
          { functionName: fn.name },
        );
      }
      response = this.cancelled(invocation);
    } else if (!outcome.ok) {
      const trace = userStack(outcome.error);
      logs.emit('error', trace, { source: 'user', scope });
      response = this.exception(invocation, outcome.error, trace);
    } else {
      response = this.succeeded(invocation, outcome.value, scope);
    }
    this.finish(invocation, response);
  }

  /** Send the response, forget the invocation. */
  finish(invocation, response) {
    if (this.inflight.get(invocation.id) === invocation) this.inflight.delete(invocation.id);
    this.running--;
    this.send(response);
    this.idleCollector.ended();
    if (this.running === 0 && this.stopping) this.idle.resolve();
  }

  succeeded(invocation, value, scope) {
    let result;
    try {
      result = encodeOutcome(value);
    } catch (err) {
      const error = `[UserCodeReturn] ${errorType(err)}: ${errorMessage(err)}`;
      logs.emit('error', `cannot encode the return value: ${error}`, { source: 'user', scope });
      return this.exception(invocation, err, userStack(err), 'UserCodeReturn');
    }
    const response = { invocation_id: invocation.id, result: success() };
    if (result.http) {
      response.return_value = {
        http: {
          status_code: String(result.http.status),
          headers: result.http.headers,
          body: { bytes: result.payload },
        },
      };
    } else if (result.payload.length > 0) {
      response.return_value = { bytes: result.payload };
    }
    return { request_id: invocation.requestId, invocation_response: response };
  }

  exception(invocation, err, trace, source = '') {
    const exception = {
      type: errorType(err),
      message: errorMessage(err),
      stack_trace: trace,
      is_user_exception: true,
    };
    if (source) exception.source = source;
    return {
      request_id: invocation.requestId,
      invocation_response: { invocation_id: invocation.id, result: { status: 'Failure', exception } },
    };
  }

  cancelled(invocation) {
    return {
      request_id: invocation.requestId,
      invocation_response: { invocation_id: invocation.id, result: { status: 'Cancelled' } },
    };
  }

  onCancel(message) {
    const invocationId = message.invocation_cancel.invocation_id;
    const invocation = this.inflight.get(invocationId);
    if (!invocation) {
      log.debug(`InvocationCancel for ${invocationId}: not in flight`);
      return;
    }
    if (!invocation.cancelled) {
      invocation.cancelled = true;
      // Abort listeners run now: in the invocation's scope, so that their output is tagged.
      logs.runInScope(invocation.scope, () => controllerOf(invocation).abort());
    }
  }
}

/** The invocation's AbortController, made on first use. */
function controllerOf(invocation) {
  if (invocation.controller === null) invocation.controller = new AbortController();
  return invocation.controller;
}

/** The `event` input's bytes (the first input when none is called `event`). */
function eventPayload(request) {
  /** @type {any} */
  let chosen = null;
  for (const binding of request.input_data ?? []) {
    if (binding.name === EVENT_BINDING) {
      chosen = binding;
      break;
    }
    chosen ??= binding;
  }
  const data = chosen?.data;
  if (!data) return EMPTY;
  switch (data.data) {
    case 'bytes':
      return data.bytes;
    case 'stream':
      return data.stream;
    case 'string':
      return Buffer.from(data.string, 'utf8');
    case 'json':
      return Buffer.from(data.json, 'utf8');
    default:
      return EMPTY;
  }
}

/** trigger_metadata as plain values (string, number, Buffer, decoded JSON, arrays); unsupported kinds left out. */
function triggerMetadata(request) {
  const metadata = {};
  for (const [key, value] of Object.entries(request.trigger_metadata ?? {})) {
    const decoded = typedValue(value);
    if (decoded !== undefined) metadata[key] = decoded;
  }
  return metadata;
}

function typedValue(data) {
  switch (data?.data) {
    case 'string':
    case 'bytes':
    case 'stream':
    case 'double':
      return data[data.data];
    case 'int':
      return Number(data.int);
    case 'json':
      try {
        return JSON.parse(data.json);
      } catch {
        return data.json;
      }
    case 'collection_string':
      return [...data.collection_string.string];
    case 'collection_sint64':
      return data.collection_sint64.sint64.map(Number);
    case 'collection_double':
      return [...data.collection_double.double];
    case 'collection_bytes':
      return [...data.collection_bytes.bytes];
    default:
      return undefined;
  }
}

module.exports = { CAPABILITIES, RUNTIME_CATEGORY, StreamWorker, run };
