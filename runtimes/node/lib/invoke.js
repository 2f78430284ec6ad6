'use strict';

// Running one handler to completion, in either of the handler styles, and
// describing what it threw.
//
// - `async (event, context) => value` and `(event, context) => value` (or a
//   promise): the returned value, awaited;
// - the Baetyl callback style `(event, context, callback) => {...}`, a
//   function that is not async and declares three or more parameters:
//   callback(err, result) decides; what it returns is ignored (a returned
//   promise that rejects fails the invocation).
// Every handler gets the callback as its third argument; for the first
// style, whichever comes first — callback or returned value — wins. Later
// calls of the callback are ignored. A synchronous throw fails either style.

const path = require('node:path');
const util = require('node:util');

const LIB_DIR = __dirname + path.sep;

function isThenable(value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
}

/** Whether fn is called in the callback style. */
function isCallbackStyle(fn) {
  return fn.length >= 3 && !util.types.isAsyncFunction(fn);
}

/**
 * Call handler(event, context, callback); resolve with {ok: true, value} or
 * {ok: false, error}. Never rejects.
 */
function runHandler(handler, event, context) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome) => {
      if (!settled) {
        settled = true;
        resolve(outcome);
      }
    };
    const callback = (err, result) => {
      if (err !== undefined && err !== null) settle({ ok: false, error: err });
      else settle({ ok: true, value: result });
    };
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (err) {
      settle({ ok: false, error: err });
      return;
    }
    const callbackStyle = isCallbackStyle(handler);
    if (isThenable(returned)) {
      Promise.resolve(returned).then(
        (value) => {
          if (!callbackStyle) settle({ ok: true, value });
        },
        (error) => settle({ ok: false, error }),
      );
    } else if (!callbackStyle) {
      settle({ ok: true, value: returned });
    }
  });
}

/** The type name of a thrown value: the error's name or class ("TypeError", "ValidationError"), else "Error". */
function errorType(err) {
  if (err === null || typeof err !== 'object') return 'Error';
  const name = typeof err.name === 'string' && err.name ? err.name : '';
  const constructorName = typeof err.constructor === 'function' ? err.constructor.name : '';
  if ((!name || name === 'Error') && constructorName && constructorName !== 'Object' && constructorName !== 'Error') {
    return constructorName;
  }
  return name || 'Error';
}

/** The message of a thrown value. */
function errorMessage(err) {
  if (typeof err === 'string') return err;
  if (err !== null && typeof err === 'object' && typeof err.message === 'string') return err.message;
  try {
    return util.inspect(err, { breakLength: Infinity });
  } catch {
    return '<unprintable value>';
  }
}

/** "<type>: <message>", as in the error details of call mode. */
function errorSummary(err) {
  return `${errorType(err)}: ${errorMessage(err)}`;
}

/**
 * The thrown value's stack without the frames of the runtime and of what
 * called it (grpc, Node's internals); "<type>: <message>" when it has no stack.
 */
function userStack(err) {
  const stack = err !== null && typeof err === 'object' ? err.stack : undefined;
  if (typeof stack !== 'string' || !stack) return errorSummary(err);
  const lines = stack.split('\n');
  const frame = (line) => /^\s+at /.test(line);
  const runtime = (line) => frame(line) && line.includes(LIB_DIR);
  const internal = (line) => frame(line) && /\(?node:(internal|async_hooks)/.test(line);
  // The innermost frames may be the runtime's (context.response() validating
  // its argument, say); from the runtime's first frame after the function's
  // own, everything is the runtime and its callers.
  const first = lines.findIndex((line) => frame(line) && !runtime(line) && !internal(line));
  let end = first < 0 ? -1 : lines.findIndex((line, index) => index > first && runtime(line));
  if (end < 0) end = lines.length;
  // The promise the runtime wraps a handler call in.
  while (end > 0 && /^\s+at new Promise \(<anonymous>\)$/.test(lines[end - 1])) end--;
  return lines
    .slice(0, end)
    .filter((line, index) => !internal(line) && !(runtime(line) && index < first))
    .join('\n');
}

module.exports = { errorMessage, errorSummary, errorType, isCallbackStyle, runHandler, userStack };
