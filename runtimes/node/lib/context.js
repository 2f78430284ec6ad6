'use strict';

// The `context` argument a handler receives.
//
// A plain object whose enumerable keys are the Baetyl ones — messageQOS,
// messageTopic, messageTimestamp (unix seconds), functionName,
// functionInvokeID, invokeid (same as functionInvokeID) — plus trigger
// (http, mqtt, timer, or invoke when the host says nothing) and whatever
// else the host sends: deadline (RFC 3339), for timers scheduledTime (the
// tick, RFC 3339 to the nanosecond) and, for HTTP,
// http: {method, path, query, headers}. So JSON.stringify(context) and
// {...context} give exactly those keys.
//
// Non-enumerable members:
//   context.logger        debug/info/log/warn/error, tagged with the invocation
//   context.response(init) an HttpResponse ({status, headers, body})
//   context.signal        an AbortSignal, aborted when the host cancels the invocation
//   context.getRemainingTimeInMillis()  milliseconds until the deadline, or null

const { HttpResponse } = require('./response');
const { log, scopeLogger } = require('./logs');

// gRPC metadata the host sends with each call: a JSON object whose keys are
// merged into the context (trigger, deadline, http, ...).
const CONTEXT_METADATA_KEY = 'polyfn-context-bin';

// Stream mode: the trigger_metadata keys that carry FunctionMessage fields.
// Only messageQOS, messageTopic and messageTimestamp become context keys (as
// in call mode, where messageID is not one; functionName is the loaded
// function's name); every other key is merged like polyfn-context-bin.
const MESSAGE_FIELD_KEYS = new Set(['messageID', 'messageQOS', 'messageTopic', 'messageTimestamp', 'functionName']);

function response(init) {
  return new HttpResponse(init);
}

/**
 * A context object.
 * @param {object} keys the enumerable keys, in order
 * @param {{scope: InstanceType<typeof import('./logs').Scope>, signal: AbortSignal|(() => AbortSignal), deadline: number|null}} options
 *   signal: the signal, or a function that makes it when the function first reads context.signal;
 *   deadline: Date.now() milliseconds, or null without one
 */
function makeContext(keys, { scope, signal, deadline }) {
  const context = {};
  for (const key of Object.keys(keys)) {
    if (key === '__proto__') {
      // An own data property: a "__proto__" key from JSON must not change the prototype.
      Object.defineProperty(context, key, { value: keys[key], enumerable: true, writable: true, configurable: true });
    } else {
      context[key] = keys[key];
    }
  }
  Object.defineProperties(context, {
    logger: lazy(context, 'logger', () => scopeLogger(scope)),
    response: hidden(response),
    signal: typeof signal === 'function' ? lazy(context, 'signal', signal) : hidden(signal),
    getRemainingTimeInMillis: hidden(() => (deadline === null ? null : Math.max(0, deadline - Date.now()))),
  });
  return context;
}

/** A read-only, non-enumerable data property. */
function hidden(value) {
  return { value, enumerable: false, writable: false, configurable: true };
}

/**
 * A property made on first read (most functions never read it), which then
 * becomes the same read-only, non-enumerable data property as hidden() gives.
 */
function lazy(object, key, make) {
  return {
    enumerable: false,
    configurable: true,
    get() {
      const value = make();
      Object.defineProperty(object, key, hidden(value));
      return value;
    },
  };
}

function setMessageKeys(keys, { qos, topic, timestamp, functionName, invocationId }) {
  keys.messageQOS = qos;
  keys.messageTopic = topic;
  keys.messageTimestamp = timestamp;
  keys.functionName = functionName;
  keys.functionInvokeID = invocationId;
  keys.invokeid = invocationId;
}

function merge(keys, extra) {
  for (const [key, value] of Object.entries(extra)) {
    if (key === '__proto__') continue;
    keys[key] = value;
  }
}

/**
 * Call mode: the host's keys (polyfn-context-bin), then the message's own
 * (which win). deadline is the gRPC deadline of the call.
 */
function callContext(message, metadataValue, { scope, signal, deadline }) {
  const keys = Object.create(null);
  keys.trigger = 'invoke';
  if (metadataValue !== undefined) merge(keys, decodeExtra(metadataValue));
  setMessageKeys(keys, {
    qos: message.QOS,
    topic: message.Topic,
    timestamp: Number(message.Timestamp),
    functionName: message.FunctionName,
    invocationId: message.FunctionInvokeID,
  });
  return makeContext(keys, { scope, signal, deadline });
}

/**
 * Stream mode: the same keys as call mode, from InvocationRequest.trigger_metadata
 * (already decoded). The deadline is its `deadline` key.
 */
function streamContext(metadata, { functionName, invocationId, scope, signal }) {
  const keys = Object.create(null);
  keys.trigger = 'invoke';
  for (const [key, value] of Object.entries(metadata)) {
    if (!MESSAGE_FIELD_KEYS.has(key) && key !== '__proto__') keys[key] = value;
  }
  const qos = metadata.messageQOS;
  const topic = metadata.messageTopic;
  const timestamp = metadata.messageTimestamp;
  setMessageKeys(keys, {
    qos: Number.isInteger(qos) ? qos : 0,
    topic: typeof topic === 'string' ? topic : '',
    timestamp: Number.isInteger(timestamp) ? timestamp : 0,
    functionName,
    invocationId,
  });
  return makeContext(keys, { scope, signal, deadline: parseDeadline(metadata.deadline) });
}

/** Date.now() milliseconds of an RFC 3339 time; null when it is not one. */
function parseDeadline(text) {
  if (typeof text !== 'string') return null;
  const match = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.exec(text.trim());
  if (!match) return null;
  const [, date, time, fraction = '', zone] = match;
  const at = Date.parse(`${date}T${time}${fraction.slice(0, 4)}${zone.toUpperCase()}`);
  return Number.isNaN(at) ? null : at;
}

function decodeExtra(value) {
  let extra;
  try {
    extra = JSON.parse(Buffer.isBuffer(value) ? value.toString('utf8') : String(value));
  } catch (err) {
    log.warn(`ignoring ${CONTEXT_METADATA_KEY} metadata: not JSON: ${err.message}`);
    return {};
  }
  if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) {
    log.warn(`ignoring ${CONTEXT_METADATA_KEY} metadata: not a JSON object`);
    return {};
  }
  return extra;
}

module.exports = { CONTEXT_METADATA_KEY, callContext, makeContext, parseDeadline, streamContext };
