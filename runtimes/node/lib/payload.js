'use strict';

// Payload conversion, with the Baetyl runtimes' semantics.
//
// Incoming: the JSON-decoded payload when it is UTF-8 JSON, else the raw
// bytes as a Buffer; an empty payload is {}. Outgoing: undefined and null are
// an empty payload, a Buffer (or any other byte view, or an ArrayBuffer) goes
// out as it is, anything else is JSON (so a string becomes a JSON string).
// A function may also return an HttpResponse (see ./response.js): its body
// follows the same rules.

const { isHttpResponse, toHttpResponse } = require('./response');

const EMPTY = Buffer.alloc(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The handler's `event` for a request payload. */
function decodeEvent(payload) {
  if (!payload || payload.length === 0) return {};
  const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  let text;
  try {
    text = utf8.decode(bytes);
  } catch {
    return bytes;
  }
  try {
    return JSON.parse(text);
  } catch {
    return bytes;
  }
}

/**
 * The reply payload for a handler's return value. Throws a TypeError when the
 * value cannot be JSON-encoded (a BigInt, a cycle, a function, a symbol).
 */
function encodeResult(value) {
  if (value === undefined || value === null) return EMPTY;
  if (Buffer.isBuffer(value)) return value;
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return Buffer.from(value);
  const text = JSON.stringify(value);
  if (text === undefined) {
    throw new TypeError(`Object of type ${typeof value} is not JSON serializable`);
  }
  return Buffer.from(text, 'utf8');
}

/**
 * What a handler's return value becomes on the wire: `{ payload, http }`,
 * where `http` is `{ status, headers }` for an HttpResponse and null
 * otherwise. Throws like encodeResult, and a TypeError or RangeError for a
 * malformed response object.
 */
function encodeOutcome(value) {
  if (isHttpResponse(value)) {
    const response = toHttpResponse(value);
    return {
      payload: encodeResult(response.body),
      http: { status: response.status, headers: { ...response.headers } },
    };
  }
  return { payload: encodeResult(value), http: null };
}

module.exports = { EMPTY, decodeEvent, encodeOutcome, encodeResult };
