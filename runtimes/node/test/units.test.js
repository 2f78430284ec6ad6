'use strict';

// The pure parts, without a process: payloads, the wire splice, config and
// arguments, error descriptions, response objects, deadlines.

const assert = require('node:assert/strict');
const { describe, test } = require('node:test');

const { UsageError, parseArgs } = require('../lib/args');
const { ConfigError, parseConfig, streamOptions } = require('../lib/config');
const { makeContext, parseDeadline } = require('../lib/context');
const { errorType, isCallbackStyle, runHandler, userStack } = require('../lib/invoke');
const { decodeEvent, encodeOutcome, encodeResult } = require('../lib/payload');
const { loadBaetyl } = require('../lib/protos');
const { HttpResponse, isHttpResponse } = require('../lib/response');
const { Scope } = require('../lib/logs');
const { WireError, replaceBytesField } = require('../lib/wire');

describe('payloads', () => {
  test('decodeEvent', () => {
    assert.deepEqual(decodeEvent(Buffer.alloc(0)), {});
    assert.deepEqual(decodeEvent(Buffer.from(' [1, {"a": null}] ')), [1, { a: null }]);
    assert.deepEqual(decodeEvent(Buffer.from('\ufeff{"bom": true}')), { bom: true });
    assert.deepEqual(decodeEvent(Buffer.from('{')), Buffer.from('{'));
    assert.deepEqual(decodeEvent(Buffer.from([0x22, 0xc3, 0x22])), Buffer.from([0x22, 0xc3, 0x22])); // not UTF-8
  });

  test('encodeResult', () => {
    assert.equal(encodeResult(undefined).length, 0);
    assert.equal(encodeResult(null).length, 0);
    assert.equal(String(encodeResult('')), '""');
    assert.equal(String(encodeResult(false)), 'false');
    assert.equal(String(encodeResult(0)), '0');
    assert.deepEqual(encodeResult(new Uint16Array([1]).subarray(0)), Buffer.from([1, 0]));
    assert.deepEqual(encodeResult(new Uint8Array([1, 2, 3, 4]).subarray(1, 3)), Buffer.from([2, 3]));
    assert.deepEqual(encodeResult(new ArrayBuffer(2)), Buffer.from([0, 0]));
    assert.equal(String(encodeResult({ when: new Date(0) })), '{"when":"1970-01-01T00:00:00.000Z"}');
    assert.throws(() => encodeResult(Symbol('s')), { name: 'TypeError', message: 'Object of type symbol is not JSON serializable' });
    assert.throws(() => encodeResult(1n), { name: 'TypeError' });
  });

  test('encodeOutcome of a response object', () => {
    const outcome = encodeOutcome(new HttpResponse({ status: 204 }));
    assert.deepEqual(outcome, { payload: Buffer.alloc(0), http: { status: 204, headers: {} } });
    assert.deepEqual(encodeOutcome({ status: 201 }), { payload: Buffer.from('{"status":201}'), http: null });
  });
});

describe('response objects', () => {
  test('defaults and header values', () => {
    const response = new HttpResponse({ headers: new Map([['x-list', ['a', 1]]]), body: 'x' });
    assert.equal(response.status, 200);
    assert.deepEqual({ ...response.headers }, { 'x-list': 'a, 1' });
    assert.ok(isHttpResponse(response));
    assert.ok(Object.isFrozen(response));
    assert.ok(!isHttpResponse({ status: 200 }));
  });

  test('a foreign copy is recognised by its brand', () => {
    const foreign = { status: 201, headers: {}, body: null, [Symbol.for('polyfn.HttpResponse')]: true };
    assert.ok(isHttpResponse(foreign));
    assert.equal(encodeOutcome(foreign).http.status, 201);
  });

  test('validation', () => {
    assert.throws(() => new HttpResponse({ status: 600 }), RangeError);
    assert.throws(() => new HttpResponse({ status: 200.5 }), RangeError);
    assert.throws(() => new HttpResponse({ status: '200' }), RangeError);
    assert.throws(() => new HttpResponse({ headers: 'x' }), TypeError);
    assert.throws(() => new HttpResponse({ headers: { a: { b: 1 } } }), TypeError);
    assert.throws(() => new HttpResponse(null), TypeError);
  });
});

describe('wire', () => {
  const { Call } = loadBaetyl().Function.service;

  test('replaceBytesField keeps every other field and drops repeats', () => {
    const message = Call.requestSerialize({ ID: '18446744073709551615', Payload: Buffer.from('old'), Topic: 't' });
    const repeated = Buffer.concat([message, Buffer.from([0x22, 0x01, 0x41])]); // Payload again: "A"
    const replaced = replaceBytesField(repeated, 4, Buffer.from('new'));
    assert.deepEqual(Call.requestDeserialize(replaced), {
      ...Call.requestDeserialize(message),
      Payload: Buffer.from('new'),
    });
  });

  test('malformed messages', () => {
    assert.throws(() => replaceBytesField(Buffer.from([0x22, 0x05, 0x41]), 4, Buffer.alloc(0)), WireError);
    assert.throws(() => replaceBytesField(Buffer.from([0x0b]), 4, Buffer.alloc(0)), WireError); // group
    assert.throws(() => replaceBytesField(Buffer.from([0x80]), 4, Buffer.alloc(0)), WireError);
  });
});

describe('config', () => {
  test('environment overrides and defaults', () => {
    const config = parseConfig(
      { name: 'n', functions: [{ name: 'f', handler: 'index.handler' }], extra: 1 },
      { BAETYL_SERVICE_INSTANCE_ADDRESS: 'unix:/tmp/x.sock', BAETYL_SERVICE_INSTANCE_NAME: 'i-1' },
    );
    assert.deepEqual(config, {
      name: 'i-1',
      functions: [{ name: 'f', handler: 'index.handler', codedir: '.' }],
      server: { address: 'unix:/tmp/x.sock', grace: 30 },
    });
  });

  test('errors name the key', () => {
    assert.throws(() => parseConfig([], {}), ConfigError);
    assert.throws(() => parseConfig({ functions: [{ name: 1, handler: 'a.b' }] }, {}), /functions\[0\]\.name: must be a string/);
    assert.throws(() => parseConfig({ functions: [{ name: 'f', handler: 'a.' }] }, {}), /functions\[0\]\.handler/);
    assert.throws(() => parseConfig({ functions: [{ name: 'f', handler: 'a.b' }], server: [] }, {}), /server: must be a mapping/);
    assert.throws(
      () => parseConfig({ functions: [{ name: 'f', handler: 'a.b' }], server: { grace: -1 } }, {}),
      /server\.grace/,
    );
  });

  test('stream options from either spelling', () => {
    assert.equal(streamOptions({}), null);
    const classic = streamOptions({ host: '127.0.0.1', port: 5, workerId: 'w', requestId: 'r', maxMessageLength: 10 });
    assert.deepEqual(classic, {
      host: '127.0.0.1',
      port: 5,
      target: '127.0.0.1:5',
      workerId: 'w',
      requestId: 'r',
      maxMessageLength: 10,
    });
    const uri = streamOptions({ functionsUri: 'http://[::1]:7071/', functionsWorkerId: 'w', functionsRequestId: 'r' });
    assert.equal(uri.target, '[::1]:7071');
    assert.equal(uri.maxMessageLength, 2147483647);
    assert.equal(streamOptions({ functionsUri: '127.0.0.1:80', workerId: 'w' }).port, 80);
    assert.throws(() => streamOptions({ functionsUri: 'http://h/', workerId: 'w' }), /expected http:\/\/HOST:PORT\//);
    // polyfn's host passes the worker id in the environment; an argument wins.
    assert.equal(streamOptions({ host: 'h', port: 1 }, { POLYFN_WORKER_ID: 'e' }).workerId, 'e');
    assert.equal(streamOptions({ host: 'h', port: 1, workerId: 'a' }, { POLYFN_WORKER_ID: 'e' }).workerId, 'a');
    assert.throws(() => streamOptions({ host: 'h', port: 1 }, {}), /needs a worker id: .* or POLYFN_WORKER_ID/);
  });
});

describe('arguments', () => {
  test('both spellings, = values, unknown arguments', () => {
    const args = parseArgs(['--port=5', '-cfile.yml', '--functions-worker-id', 'w', '--x', 'y', 'z']);
    assert.equal(args.port, 5);
    assert.equal(args.config, 'file.yml');
    assert.equal(args.functionsWorkerId, 'w');
    assert.deepEqual(args.unknown, ['--x', 'y', 'z']);
    assert.equal(parseArgs([]).config, 'etc/baetyl/service.yml');
  });

  test('usage errors', () => {
    assert.throws(() => parseArgs(['-c']), UsageError);
    assert.throws(() => parseArgs(['--grpcMaxMessageLength', '1e3']), UsageError);
  });
});

describe('handlers and errors', () => {
  test('which handlers are callback style', () => {
    assert.equal(isCallbackStyle((e, c, cb) => cb), true);
    assert.equal(isCallbackStyle(async (e, c, cb) => cb), false);
    assert.equal(isCallbackStyle((e, c) => c), false);
  });

  test('runHandler outcomes', async () => {
    assert.deepEqual(await runHandler(() => 1), { ok: true, value: 1 });
    assert.deepEqual(await runHandler(async () => 2), { ok: true, value: 2 });
    assert.deepEqual(await runHandler((e, c, cb) => cb(undefined, 3)), { ok: true, value: 3 });
    assert.deepEqual(await runHandler((e, c, cb) => { cb(null, 4); return 5; }), { ok: true, value: 4 });
    // An async function with a callback parameter: whichever settles first.
    assert.deepEqual(await runHandler(async (e, c, cb) => { cb(null, 6); return 7; }), { ok: true, value: 6 });
    assert.deepEqual(await runHandler(async (e, c, cb) => 8), { ok: true, value: 8 }); // eslint-disable-line no-unused-vars
    const thrown = new Error('x');
    assert.deepEqual(await runHandler(() => { throw thrown; }), { ok: false, error: thrown });
    assert.deepEqual(await runHandler(() => Promise.reject(thrown)), { ok: false, error: thrown });
    assert.deepEqual(await runHandler((e, c, cb) => cb(thrown)), { ok: false, error: thrown });
    assert.deepEqual(await runHandler(() => { throw undefined; }), { ok: false, error: undefined });
  });

  test('errorType', () => {
    class Custom extends Error {}
    class Named extends Error {
      constructor() {
        super('m');
        this.name = 'NamedError';
      }
    }
    assert.equal(errorType(new TypeError('x')), 'TypeError');
    assert.equal(errorType(new Custom('x')), 'Custom');
    assert.equal(errorType(new Named()), 'NamedError');
    assert.equal(errorType(new Error('x')), 'Error');
    assert.equal(errorType('text'), 'Error');
    assert.equal(errorType({ message: 'plain object' }), 'Error');
    assert.equal(errorType(null), 'Error');
  });

  test('userStack of values without a stack', () => {
    assert.equal(userStack('text'), 'Error: text');
    assert.equal(userStack({ code: 1 }), 'Error: { code: 1 }');
    assert.equal(userStack(undefined), 'Error: undefined');
  });
});

test('context: signal and logger made on first read, keys own data properties', () => {
  let made = 0;
  const controller = new AbortController();
  const keys = JSON.parse('{"__proto__": {"polluted": true}, "b": 2}');
  const context = makeContext(keys, {
    scope: new Scope('f', 'i'),
    signal: () => {
      made++;
      return controller.signal;
    },
    deadline: null,
  });
  assert.deepEqual(Object.keys(context), ['__proto__', 'b']);
  assert.equal(Object.getPrototypeOf(context), Object.prototype);
  assert.equal(context.polluted, undefined);
  assert.equal(made, 0);
  controller.abort(); // a cancel before the function first reads the signal
  assert.equal(context.signal, controller.signal);
  assert.equal(context.signal.aborted, true);
  assert.equal(made, 1);
  for (const key of ['signal', 'logger']) {
    assert.equal(context[key], context[key]);
    const descriptor = Object.getOwnPropertyDescriptor(context, key);
    assert.equal(descriptor.enumerable, false);
    assert.equal(descriptor.writable, false);
  }
  assert.equal(typeof context.logger.info, 'function');
});

test('parseDeadline', () => {
  assert.equal(parseDeadline('2026-11-29T07:00:00.5Z'), Date.UTC(2026, 10, 29, 7, 0, 0, 500));
  assert.equal(parseDeadline('2026-11-29T07:00:00.123456789Z'), Date.UTC(2026, 10, 29, 7, 0, 0, 123));
  assert.equal(parseDeadline('2026-11-29t09:00:00+02:00'), Date.UTC(2026, 10, 29, 7, 0, 0));
  assert.equal(parseDeadline('tomorrow'), null);
  assert.equal(parseDeadline(5), null);
});

describe('log sources', () => {
  // In a child process: fatal() exits, and logs.install() changes the whole process.
  const { spawnSync } = require('node:child_process');
  const path = require('node:path');
  const lib = path.join(__dirname, '..', 'lib');

  test("an error main() did not handle is one of the runtime's records", () => {
    const script = `require(${JSON.stringify(path.join(lib, 'main'))}).fatal(new Error('boom'))`;
    const done = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(done.status, 1);
    const records = done.stderr.trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(records.length, 1);
    assert.equal(records[0].source, 'runtime');
    assert.equal(records[0].level, 'error');
    assert.match(records[0].msg, /^polyfn-node: Error: boom\n/);
  });

  test("the function's console and stdout are the user's, the runtime's own log the runtime's", () => {
    const script = `
      const logs = require(${JSON.stringify(path.join(lib, 'logs'))});
      logs.install();
      console.log('from console');
      process.stdout.write('from stdout\\n');
      logs.log.info('from the runtime');
    `;
    const done = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(done.status, 0, done.stderr);
    assert.equal(done.stdout, '');
    const bySource = Object.fromEntries(
      done.stderr.trim().split('\n').map((line) => JSON.parse(line)).map((r) => [r.msg, r.source]),
    );
    assert.deepEqual(bySource, { 'from console': 'user', 'from stdout': 'user', 'from the runtime': 'runtime' });
  });
});
