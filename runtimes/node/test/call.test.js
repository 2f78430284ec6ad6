'use strict';

// Call mode, end to end: a real worker process and a real gRPC client.

const assert = require('node:assert/strict');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const { randomUUID } = require('node:crypto');
const grpc = require('@grpc/grpc-js');

const { Call, CallWorker } = require('./call-client');
const { CODE, FUNCTIONS, OTHERS } = require('./fixtures');
const { tempDir, writeCode } = require('./helpers');

const UNKNOWN = grpc.status.UNKNOWN;

function newId() {
  return `inv-${randomUUID()}`;
}

function json(value) {
  return Buffer.from(JSON.stringify(value));
}

describe('call mode', () => {
  let dir;
  let worker;

  before(async () => {
    dir = writeCode(tempDir(), CODE);
    const functions = Object.entries(FUNCTIONS).map(([name, handler]) => ({ name, handler, codedir: 'main' }));
    for (const [name, codedir, handler] of OTHERS) {
      // One absolute codedir, the rest relative to the working directory.
      functions.push({ name, handler, codedir: name === 'one' ? path.join(dir, codedir) : codedir });
    }
    worker = await CallWorker.start(dir, { name: 'test-runtime', functions, server: { grace: 5 } });
    await worker.ready();
  });

  after(() => worker?.kill());

  describe('payloads', () => {
    const events = [
      ['json object', '{"x": [1, 2], "y": "z"}', { type: 'object', value: { x: [1, 2], y: 'z' } }],
      ['json number', '42', { type: 'number', value: 42 }],
      ['json string', '"text"', { type: 'string', value: 'text' }],
      ['json null', 'null', { type: 'null', value: null }],
      ['empty', '', { type: 'object', value: {} }],
      ['binary', Buffer.from([0xff, 0x00, 0x6e, 0x6f]), { type: 'buffer', hex: 'ff006e6f' }],
      ['text', 'plain text', { type: 'buffer', hex: Buffer.from('plain text').toString('hex') }],
      ['invalid utf-8 in a json string', Buffer.from([0x22, 0xff, 0x22]), { type: 'buffer', hex: '22ff22' }],
    ];
    for (const [name, payload, expected] of events) {
      test(`event from payload: ${name}`, async () => {
        assert.deepEqual(await worker.json('describe', payload), expected);
      });
    }

    const returns = [
      ['undefined', ''],
      ['null', ''],
      ['buffer', Buffer.from([0x00, 0xff, 0x72, 0x61, 0x77])],
      ['uint8array', Buffer.from([1, 2, 3])],
      ['string', '"hello"'],
      ['number', '42'],
      ['object', JSON.stringify({ a: [1, 2.5, null, true], b: '\u00e9' })],
    ];
    for (const [kind, expected] of returns) {
      test(`return value to payload: ${kind}`, async () => {
        assert.deepEqual(await worker.payload('returns', json({ kind })), Buffer.from(expected));
      });
    }

    const unencodable = [
      ['bigint', '[UserCodeReturn] TypeError: Do not know how to serialize a BigInt'],
      ['cycle', '[UserCodeReturn] TypeError: Converting circular structure to JSON'],
      ['function', '[UserCodeReturn] TypeError: Object of type function is not JSON serializable'],
    ];
    for (const [kind, expected] of unencodable) {
      test(`unencodable return value: ${kind}`, async () => {
        const invocationId = newId();
        const error = await worker.error('returns', json({ kind }), { FunctionInvokeID: invocationId });
        assert.equal(error.code, UNKNOWN);
        assert.ok(error.details.startsWith(expected), error.details);
        await worker.waitForRecord(
          (r) => r.invocation_id === invocationId && r.msg.startsWith('cannot encode the return value: [UserCodeReturn]'),
          'the encoding error, logged',
        );
      });
    }
  });

  describe('message fields and context', () => {
    test('the reply echoes the request fields', async () => {
      const invocationId = newId();
      const fields = {
        ID: '9223372036854775813',
        QOS: 1,
        Topic: 'sensors/1/temp',
        Timestamp: '-1700000000',
        FunctionInvokeID: invocationId,
      };
      const { reply } = await worker.call('returns', json({ kind: 'string' }), fields);
      assert.deepEqual(reply, { ...fields, FunctionName: 'returns', Payload: Buffer.from('"hello"') });
    });

    test('unknown fields are echoed', async () => {
      const unknown = Buffer.from([0xa0, 0x01, 0x07]); // field 20, varint 7
      const request = Call.requestSerialize({ FunctionName: 'returns', Payload: json({ kind: 'null' }), ID: '9' });
      const reply = await worker.raw(Buffer.concat([request, unknown]));
      assert.ok(reply.includes(unknown));
      const decoded = Call.responseDeserialize(reply);
      assert.equal(decoded.ID, '9');
      assert.equal(decoded.Payload.length, 0);
    });

    test('context without host metadata', async () => {
      const invocationId = newId();
      const { reply } = await worker.call(
        'context',
        '',
        { QOS: 1, Topic: 't/1', Timestamp: '1700000000', FunctionInvokeID: invocationId },
        { timeout: null },
      );
      const keys = {
        trigger: 'invoke',
        messageQOS: 1,
        messageTopic: 't/1',
        messageTimestamp: 1700000000,
        functionName: 'context',
        functionInvokeID: invocationId,
        invokeid: invocationId,
      };
      assert.deepEqual(JSON.parse(reply.Payload), {
        keys: Object.keys(keys),
        spread: keys,
        json: keys,
        remaining: null,
        logger: true,
        signal: true,
        response: true,
      });
    });

    test('context from host metadata', async () => {
      const invocationId = newId();
      const extra = {
        trigger: 'http',
        deadline: '2030-01-02T03:04:05.5Z',
        http: { method: 'POST', path: '/sayhi', query: { a: ['1', '2'] }, headers: { 'content-type': ['application/json'] } },
        functionName: 'spoofed', // the message's own fields win over the host's keys
      };
      const metadata = new grpc.Metadata();
      metadata.set('polyfn-context-bin', json(extra));
      const { reply } = await worker.call('context', '', { FunctionInvokeID: invocationId }, { metadata, timeout: 10_000 });
      const result = JSON.parse(reply.Payload);
      assert.equal(result.spread.trigger, 'http');
      assert.equal(result.spread.deadline, extra.deadline);
      assert.deepEqual(result.spread.http, extra.http);
      assert.equal(result.spread.functionName, 'context');
      assert.equal(result.spread.functionInvokeID, invocationId);
      assert.equal(result.spread.invokeid, invocationId);
      // The gRPC deadline, not the deadline key.
      assert.ok(result.remaining > 0 && result.remaining <= 10_000, String(result.remaining));
    });

    test('host metadata that is not a JSON object is ignored with a warning', async () => {
      const metadata = new grpc.Metadata();
      metadata.set('polyfn-context-bin', Buffer.from('[1, 2]'));
      const { reply } = await worker.call('context', '', {}, { metadata });
      assert.equal(JSON.parse(reply.Payload).spread.trigger, 'invoke');
      await worker.waitForRecord(
        (r) => r.level === 'warning' && r.msg === 'ignoring polyfn-context-bin metadata: not a JSON object',
        'the warning',
      );
    });
  });

  describe('handlers', () => {
    for (const style of ['async', 'sync', 'callback']) {
      test(`${style} handler`, async () => {
        assert.deepEqual(await worker.json(`${style}-echo`, '{"n": 1}'), {
          style,
          event: { n: 1 },
          function: `${style}-echo`,
        });
      });
    }

    test('a callback called twice: the first call wins', async () => {
      assert.deepEqual(await worker.json('callback-twice'), 'first');
    });

    const failures = [
      ['fail', '{"why": "no name"}', 'TypeError', 'bad input: no name'],
      ['async-fail', '', 'ValidationError', 'missing'],
      ['callback-fail', '', 'RangeError', 'too far'],
      ['throw-string', '', 'Error', 'plain string'],
    ];
    for (const [name, payload, type, message] of failures) {
      test(`${name}: the error has type and message, is logged, and the worker keeps serving`, async () => {
        const invocationId = newId();
        const error = await worker.error(name, payload, { FunctionInvokeID: invocationId });
        assert.equal(error.code, UNKNOWN);
        assert.equal(error.details, `[UserCodeInvoke] ${type}: ${message}`);

        const record = await worker.waitForRecord((r) => r.invocation_id === invocationId, 'the stack, logged');
        assert.equal(record.level, 'error');
        assert.equal(record.function, name);
        assert.equal(record.source, 'user');
        if (name !== 'throw-string') {
          assert.match(record.msg, new RegExp(`^${type === 'ValidationError' ? 'Error' : type}: ${message}\n    at `));
          assert.match(record.msg, /handlers\.js:\d+:\d+/);
          assert.doesNotMatch(record.msg, /lib\/(call|invoke)\.js|grpc-js|node:internal/);
        }
        assert.deepEqual(await worker.json('describe', '{}'), { type: 'object', value: {} });
      });
    }

    test('a call the client gives up on aborts context.signal', async () => {
      const invocationId = newId();
      const error = await worker.error('forever', '', { FunctionInvokeID: invocationId }, { timeout: 300 });
      assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
      await worker.waitForRecord((r) => r.invocation_id === invocationId && r.msg === 'cancelled', 'the abort listener');
    });

    test('unknown function', async () => {
      const error = await worker.error('nope');
      assert.equal(error.code, UNKNOWN);
      assert.equal(error.details, 'function not found: nope');
    });
  });

  describe('modules', () => {
    test('the same module name in two codedirs', async () => {
      assert.equal(String(await worker.payload('one')), '"one"');
      assert.equal(String(await worker.payload('two')), '"two"');
    });

    test('sibling require and a dotted module path', async () => {
      assert.equal(String(await worker.payload('sibling')), '"from sibling"');
      assert.equal(String(await worker.payload('nested')), '"nested path"');
    });

    test('an ES module (.mjs) with its own imports', async () => {
      assert.deepEqual(await worker.json('esm'), { esm: true, sep: '/', helper: 'esm helper', fn: 'esm' });
    });

    test('an ES module by package.json "type": "module"', async () => {
      assert.equal(await worker.json('esm-package'), 'undefined');
    });

    test('module.exports of a .cjs file, callback style', async () => {
      assert.equal(await worker.json('cjs-object'), 'module.exports object');
    });

    test('a property of an ES default export', async () => {
      assert.equal(await worker.json('esm-default'), 'default export');
    });
  });

  describe('HTTP response objects', () => {
    test('status and headers travel as polyfn-response-bin, the body as Payload', async () => {
      const { reply, header } = await worker.call('created', '{"id": 7}');
      assert.deepEqual(JSON.parse(header.get('polyfn-response-bin')[0]), {
        status: 201,
        headers: { 'x-a': 'b', 'x-n': '5' },
      });
      assert.deepEqual(JSON.parse(reply.Payload), { id: 7 });
    });

    test('a Buffer body goes out as it is', async () => {
      const { reply, header } = await worker.call('raw-response');
      assert.deepEqual(JSON.parse(header.get('polyfn-response-bin')[0]), {
        status: 202,
        headers: { 'content-type': 'text/plain' },
      });
      assert.equal(String(reply.Payload), 'raw body');
    });

    test('a plain return value has no response metadata', async () => {
      const { header } = await worker.call('describe', '1');
      assert.deepEqual(header.get('polyfn-response-bin'), []);
    });

    test('a bad status is a function error', async () => {
      const error = await worker.error('bad-status');
      assert.equal(error.details, '[UserCodeInvoke] RangeError: HTTP status must be an integer from 100 to 599, got 99');
    });
  });

  test('messages over the default grpc size limit, both ways', async () => {
    const big = 6 * 1024 * 1024;
    assert.equal(await worker.json('size', Buffer.alloc(big, 0xff)), big);
    assert.equal((await worker.payload('size', json({ size: big }))).length, big);
  });

  test('errors nobody catches are logged and the worker keeps serving', async () => {
    assert.equal(await worker.json('stray'), 'returned');
    await worker.waitForRecord(
      (r) => r.level === 'error' && r.msg.startsWith('unhandled promise rejection: Error: stray rejection'),
      'the unhandled rejection',
    );
    await worker.waitForRecord(
      (r) => r.level === 'error' && r.msg.startsWith('uncaught exception: Error: thrown later'),
      'the uncaught exception',
    );
    assert.deepEqual(await worker.json('describe', '2'), { type: 'number', value: 2 });
  });

  test('invocations run concurrently', async () => {
    // The handler settles only once three invocations are inside it at the same time.
    const event = json({ group: 'call', n: 3 });
    const replies = await Promise.all([1, 2, 3].map(() => worker.json('rendezvous', event)));
    assert.deepEqual(replies, [3, 3, 3]);
  });

  describe('logs', () => {
    test('console, stdout, stderr and context.logger become JSON lines tagged with the invocation', async () => {
      const invocationId = newId();
      const tag = invocationId.slice(-8);
      await worker.call('chatty', json({ tag }), { FunctionInvokeID: invocationId });
      const expected = {
        [`log ${tag}`]: 'info',
        [`info ${tag}`]: 'info',
        [`debug ${tag}`]: 'debug',
        [`warn ${tag}`]: 'warning',
        [`error ${tag}`]: 'error',
        [`stdout ${tag}`]: 'info',
        [`stderr ${tag}`]: 'error',
        [`logger info ${tag}`]: 'info',
        [`logger warn ${tag}`]: 'warning',
        [`after await ${tag}`]: 'info',
        [`partial ${tag}`]: 'info', // flushed when the invocation ended
      };
      const records = await worker.waitForRecords((r) => r.invocation_id === invocationId, {
        count: Object.keys(expected).length,
      });
      assert.deepEqual(Object.fromEntries(records.map((r) => [r.msg, r.level])), expected);
      for (const record of records) {
        assert.deepEqual(Object.keys(record), ['level', 'msg', 'function', 'invocation_id', 'source']);
        assert.equal(record.function, 'chatty');
        assert.equal(record.source, 'user');
      }
    });

    test('runtime messages, and nothing on stdout', () => {
      const runtime = worker.records().filter((r) => r.source === 'runtime');
      assert.ok(runtime.some((r) => r.msg.startsWith('polyfn node runtime') && r.msg.includes('call mode as test-runtime')));
      assert.ok(runtime.some((r) => r.msg === 'loaded function esm (handler index.handler)' && r.function === 'esm'));
      assert.ok(runtime.some((r) => r.msg === `listening on ${worker.address}`));
      assert.equal(worker.stdout, '');
    });
  });
});
