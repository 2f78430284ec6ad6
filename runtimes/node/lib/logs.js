'use strict';

// Structured logs: one JSON object per line on the process's stderr, or
// another sink.
//
//   {"level": "info", "msg": "...", "function": "sayhi", "invocation_id": "...", "source": "user"}
//
// `level` is one of debug, info, warning, error; `source` is `user` for what
// function code writes and `runtime` for the runtime's own messages;
// `function` and `invocation_id` are left out when unknown. Non-ASCII
// characters are written as \u escapes, as the Python runtime does.
//
// After install():
//
// - console.log/info/debug/warn/error (and what Node builds on them:
//   console.trace, assert, count, table, ...) become one record per call,
//   at info, info, debug, warning, error;
// - process.stdout.write and process.stderr.write become one record per line
//   (stdout at info, stderr at error). A partial line waits for its newline
//   or for the end of the invocation that wrote it;
// - an uncaught exception or an unhandled rejection is logged as an error
//   and the worker keeps running.
//
// Which function and invocation a record belongs to comes from an
// AsyncLocalStorage holding the current Scope: callbacks, promises and timers
// created inside an invocation carry it. context.logger tags its records
// explicitly, wherever it is called from.
//
// Records go to a sink: JSON lines on stderr by default; setSink() routes
// every record elsewhere (stream mode sends them to the host as RpcLog
// messages while its stream is up) and setSink(null) goes back to stderr.

const util = require('node:util');
const { AsyncLocalStorage } = require('node:async_hooks');

const LEVELS = Object.freeze(['debug', 'info', 'warning', 'error']);

/** The function (and invocation) that output currently belongs to. */
class Scope {
  /**
   * @param {string|null} [functionName]
   * @param {string|null} [invocationId]
   */
  constructor(functionName = null, invocationId = null) {
    this.function = functionName || null;
    this.invocationId = invocationId || null;
    // Partial lines written so far, per stream ('stdout', 'stderr'); created on first use.
    this.pending = null;
    this.closed = false;
  }
}

const storage = new AsyncLocalStorage();
const orphans = new Scope(); // output written outside any function or invocation

/** The scope of the code running now, or null. */
function currentScope() {
  return storage.getStore() ?? null;
}

/** Run fn with scope as the current scope (and everything it schedules). */
function runInScope(scope, fn) {
  return storage.run(scope, fn);
}

// The real stderr, kept before install() replaces process.stderr.write.
const writeStderr = process.stderr.write.bind(process.stderr);

function asciiJson(value) {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Writes records as JSON lines on the process's stderr, one write per line. */
class StderrSink {
  /**
   * @param {string} level
   * @param {string} msg
   * @param {{source: string, functionName?: string|null, invocationId?: string|null}} fields
   */
  emit(level, msg, { source, functionName = null, invocationId = null }) {
    const record = { level, msg };
    if (functionName) record.function = functionName;
    if (invocationId) record.invocation_id = invocationId;
    record.source = source;
    try {
      writeStderr(`${asciiJson(record)}\n`);
    } catch {
      // stderr is gone (the host closed the pipe): nowhere to log to.
    }
  }
}

const stderrSink = new StderrSink();
let sink = stderrSink;

/** Send every record to target (an object with emit(level, msg, fields)); null: back to stderr. */
function setSink(target) {
  sink = target ?? stderrSink;
}

/**
 * Write one record. Tagged with `scope` when given; records of the runtime
 * (source 'runtime') otherwise name only `functionName`, user records take
 * the current scope.
 * @param {string} level
 * @param {unknown} msg
 * @param {{source?: string, scope?: Scope|null, functionName?: string|null}} [options]
 */
function emit(level, msg, { source = 'runtime', scope = null, functionName = null } = {}) {
  if (scope === null && source === 'user') scope = currentScope();
  sink.emit(level, String(msg), {
    source,
    functionName: scope?.function ?? functionName,
    invocationId: scope?.invocationId ?? null,
  });
}

function format(args) {
  return util.format(...args);
}

/**
 * The runtime's own logger: log.info('text', { functionName }). Debug
 * messages are dropped unless POLYFN_RUNTIME_DEBUG is set.
 */
const log = {
  debug(msg, fields) {
    if (process.env.POLYFN_RUNTIME_DEBUG) emit('debug', msg, fields);
  },
  info(msg, fields) {
    emit('info', msg, fields);
  },
  warn(msg, fields) {
    emit('warning', msg, fields);
  },
  error(msg, fields) {
    emit('error', msg, fields);
  },
};

/** context.logger: records tagged with one invocation, wherever it is called from. */
function scopeLogger(scope) {
  const at = (level) => (...args) => emit(level, format(args), { source: 'user', scope });
  return Object.freeze({
    debug: at('debug'),
    info: at('info'),
    log: at('info'),
    warn: at('warning'),
    warning: at('warning'),
    error: at('error'),
  });
}

// -- line buffering of process.stdout/stderr writes ---------------------------------

const STREAM_LEVELS = Object.freeze({ stdout: 'info', stderr: 'error' });

function writeText(stream, text) {
  if (!text) return;
  const scope = currentScope() ?? orphans;
  const before = scope.pending?.[stream] ?? '';
  if (!text.includes('\n') && !scope.closed) {
    scope.pending ??= {};
    scope.pending[stream] = before + text;
    return;
  }
  const lines = (before + text).split('\n');
  const rest = lines.pop();
  if (scope.pending) delete scope.pending[stream];
  if (rest) {
    if (scope.closed) {
      lines.push(rest);
    } else {
      scope.pending ??= {};
      scope.pending[stream] = rest;
    }
  }
  for (const line of lines) emitLine(stream, line, scope);
}

function emitLine(stream, line, scope) {
  const text = line.endsWith('\r') ? line.slice(0, -1) : line;
  emit(STREAM_LEVELS[stream], text, { source: 'user', scope: scope === orphans ? null : scope });
}

function flushPending(scope) {
  const pending = scope.pending;
  scope.pending = null;
  if (!pending) return;
  for (const [stream, rest] of Object.entries(pending)) {
    if (rest) emitLine(stream, rest, scope);
  }
}

/** Close scope: write its partial lines; later output of the scope is not buffered. */
function endScope(scope) {
  scope.closed = true;
  flushPending(scope);
}

/** Write partial lines written outside any invocation (at exit). */
function flushAll() {
  flushPending(orphans);
}

function patchedWrite(stream) {
  return function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    let text;
    if (typeof chunk === 'string') {
      text = encoding && encoding !== 'utf8' && encoding !== 'utf-8' ? Buffer.from(chunk, encoding).toString('utf8') : chunk;
    } else if (ArrayBuffer.isView(chunk)) {
      text = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8');
    } else {
      text = String(chunk);
    }
    writeText(stream, text);
    if (typeof callback === 'function') process.nextTick(callback);
    return true;
  };
}

let installed = false;

/** Route console, stdout, stderr and uncaught errors to the sink (once per process). */
function install() {
  if (installed) return;
  installed = true;
  const consoleLevels = { log: 'info', info: 'info', debug: 'debug', warn: 'warning', error: 'error' };
  for (const [method, level] of Object.entries(consoleLevels)) {
    console[method] = (...args) => emit(level, format(args), { source: 'user' });
  }
  process.stdout.write = patchedWrite('stdout');
  process.stderr.write = patchedWrite('stderr');
  // A host that closed our pipes must not crash the worker (EPIPE): records are dropped.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});

  process.on('uncaughtException', (err, origin) => {
    const what = origin === 'unhandledRejection' ? 'unhandled promise rejection' : 'uncaught exception';
    emit('error', `${what}: ${describeThrown(err)}`, { source: 'user' });
  });
  process.on('unhandledRejection', (reason) => {
    emit('error', `unhandled promise rejection: ${describeThrown(reason)}`, { source: 'user' });
  });
}

function describeThrown(value) {
  if (value instanceof Error && typeof value.stack === 'string') return value.stack;
  return util.inspect(value);
}

module.exports = {
  LEVELS,
  Scope,
  currentScope,
  emit,
  endScope,
  flushAll,
  install,
  log,
  runInScope,
  scopeLogger,
  setSink,
  stderrSink,
};
