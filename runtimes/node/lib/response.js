'use strict';

// HTTP response objects (docs/protocols.md, "HTTP response objects").
//
// A function returns `context.response({ status, headers, body })` to set the
// HTTP status code and headers of its answer; `body` follows the payload
// rules. For triggers other than HTTP the host uses only the body.

const util = require('node:util');

// Marks response objects made by any copy of this package.
const BRAND = Symbol.for('polyfn.HttpResponse');

/** An explicit HTTP response: status 100–599 (default 200), string headers, any body. */
class HttpResponse {
  /**
   * @param {{status?: number, headers?: object|Map|Headers, body?: any}} [init]
   * @throws {RangeError} the status is not an integer from 100 to 599
   * @throws {TypeError} init or headers have the wrong shape
   */
  constructor(init = {}) {
    if (init === null || typeof init !== 'object') {
      throw new TypeError(`an HTTP response must be an object {status, headers, body}, got ${util.inspect(init)}`);
    }
    const { status = 200, headers, body } = init;
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new RangeError(`HTTP status must be an integer from 100 to 599, got ${util.inspect(status)}`);
    }
    this.status = status;
    this.headers = Object.freeze(normalizeHeaders(headers));
    this.body = body;
    Object.freeze(this);
  }

  get [BRAND]() {
    return true;
  }
}

function normalizeHeaders(headers) {
  const out = Object.create(null);
  if (headers === undefined || headers === null) return out;
  if (typeof headers !== 'object') {
    throw new TypeError(`HTTP headers must be an object of strings, got ${util.inspect(headers)}`);
  }
  const entries =
    headers instanceof Map || (typeof headers.entries === 'function' && typeof headers[Symbol.iterator] === 'function')
      ? Array.from(headers.entries())
      : Object.entries(headers);
  for (const [name, value] of entries) {
    out[String(name)] = headerValue(name, value);
  }
  return out;
}

function headerValue(name, value) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value) && value.every((item) => ['string', 'number', 'boolean'].includes(typeof item))) {
    return value.join(', ');
  }
  throw new TypeError(`HTTP header ${util.inspect(String(name))} must be a string, got ${util.inspect(value)}`);
}

/** Whether value is a response object (made by this or another copy of the package). */
function isHttpResponse(value) {
  return value instanceof HttpResponse || (value !== null && typeof value === 'object' && value[BRAND] === true);
}

/** value as an HttpResponse of this copy of the package (validated again when foreign). */
function toHttpResponse(value) {
  return value instanceof HttpResponse ? value : new HttpResponse(value);
}

module.exports = { HttpResponse, isHttpResponse, toHttpResponse };
