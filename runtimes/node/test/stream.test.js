'use strict';

// Stream mode, end to end: an in-test HOST (gRPC server) and the real worker
// process dialing in. The same semantic table as call mode (call.test.js),
// over AzureFunctionsRpcMessages.FunctionRpc/EventStream as
// docs/protocols.md describes it for polyfn functions.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');

const { BROKEN, CODE, FUNCTIONS, OTHERS } = require('./fixtures');
const { tempDir, writeCode } = require('./helpers');
const { Host, StreamWorker, functionMetadata, newId } = require('./stream-host');

function json(value) {
  return Buffer.from(JSON.stringify(value));
}

function payloadJson(response) {
  assert.equal(response.result.status, 'Success', JSON.stringify(response.result));
  return JSON.parse(response.return_value.bytes.toString('utf8'));
}

describe('stream mode', () => {
  let dir;
  let host;
  let worker;
  let stream;
  let init;

  before(async () => {
    dir = writeCode(tempDir(), CODE);
    host = await Host.start();
    worker = new StreamWorker(dir, host.port);
    stream = await host.accept(worker);
    init = await stream.init();
    const loads = Object.entries(FUNCTIONS).map(([name, entryPoint]) =>
      stream.load(name, path.join(dir, 'main'), entryPoint),
    );
    for (const [name, codedir, entryPoint] of OTHERS) loads.push(stream.load(name, path.join(dir, codedir), entryPoint));
    for (const response of await Promise.all(loads)) {
      assert.equal(response.result.status, 'Success', `${JSON.stringify(response)}\n${worker.stderr}`);
    }
  });

  after(() => {
    worker?.kill();
    host?.stop();
  });

  describe('the beginning of the stream', () => {
    test('the first message is StartStream', () => {
      const [first] = stream.received;
      assert.equal(first.content, 'start_stream');
      assert.equal(first.start_stream.worker_id, worker.workerId);
      assert.equal(first.request_id, worker.requestId);
    });

    test('WorkerInitResponse', () => {
      assert.equal(init.result.status, 'Success');
      assert.deepEqual(init.capabilities, {
        HandlesInvocationCancelMessage: 'true',
        HandlesWorkerTerminateMessage: 'true',
        polyfn: '1',
      });
      assert.ok(init.worker_version);
      assert.equal(init.worker_metadata.runtime_name, 'node');
      assert.equal(init.worker_metadata.runtime_version, process.versions.node);
      assert.equal(init.worker_metadata.worker_version, init.worker_version);
    });

    test('other host requests are answered, unknown ones ignored', async () => {
      const metadata = await stream.responseTo(
        stream.send({ functions_metadata_request: { function_app_directory: dir } }),
        'function_metadata_response',
      );
      assert.equal(metadata.use_default_metadata_indexing, true);
      assert.equal(metadata.result.status, 'Success');
      const warmup = await stream.responseTo(
        stream.send({ worker_warmup_request: { worker_directory: dir } }),
        'worker_warmup_response',
      );
      assert.equal(warmup.result.status, 'Success');
      // Messages the worker does not handle are ignored...
      stream.send({ file_change_event_request: { full_path: '/nowhere' } });
      stream.send({ worker_heartbeat: {} });
      // ...and it keeps answering.
      await stream.responseTo(stream.send({ worker_status_request: {} }), 'worker_status_response');
    });
  });

  describe('payloads', () => {
    const events = [
      ['json object', '{"x": [1, 2], "y": "z"}', { type: 'object', value: { x: [1, 2], y: 'z' } }],
      ['json number', '42', { type: 'number', value: 42 }],
      ['json string', '"text"', { type: 'string', value: 'text' }],
      ['empty', '', { type: 'object', value: {} }],
      ['no input', null, { type: 'object', value: {} }],
      ['binary', Buffer.from([0xff, 0x00, 0x6e, 0x6f]), { type: 'buffer', hex: 'ff006e6f' }],
      ['text', 'plain text', { type: 'buffer', hex: Buffer.from('plain text').toString('hex') }],
    ];
    for (const [name, payload, expected] of events) {
      test(`event from payload: ${name}`, async () => {
        assert.deepEqual(payloadJson(await stream.call('describe', payload)), expected);
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
        const response = await stream.call('returns', json({ kind }));
        assert.equal(response.result.status, 'Success');
        if (expected.length === 0) {
          assert.equal(response.return_value, null); // absent for an empty result
        } else {
          assert.deepEqual(response.return_value.bytes, Buffer.from(expected));
        }
      });
    }

    const unencodable = [
      ['bigint', 'Do not know how to serialize a BigInt'],
      ['cycle', 'Converting circular structure to JSON'],
      ['function', 'Object of type function is not JSON serializable'],
    ];
    for (const [kind, message] of unencodable) {
      test(`unencodable return value: ${kind}`, async () => {
        const response = await stream.call('returns', json({ kind }));
        assert.equal(response.result.status, 'Failure');
        const { exception } = response.result;
        assert.equal(exception.type, 'TypeError');
        assert.ok(exception.message.startsWith(message), exception.message);
        assert.equal(exception.source, 'UserCodeReturn');
        assert.equal(exception.is_user_exception, true);
        assert.equal(response.return_value, null);
      });
    }

    test('the response echoes the request id', async () => {
      const { invocationId, requestId } = stream.invoke('describe', '{}');
      await stream.result(invocationId);
      const message = stream.received.find(
        (m) => m.content === 'invocation_response' && m.invocation_response.invocation_id === invocationId,
      );
      assert.equal(message.request_id, requestId);
    });
  });

  describe('context', () => {
    test('from trigger_metadata', async () => {
      const deadline = new Date(Date.now() + 10_000).toISOString().replace('Z', '123456Z'); // nanoseconds
      const http = {
        method: 'POST',
        path: '/function/context',
        query: { a: ['1', '2'] },
        headers: { 'content-type': ['application/json'] },
      };
      const metadata = {
        trigger: 'http',
        functionName: 'context',
        messageID: 7,
        messageQOS: 1,
        messageTopic: 't/1',
        messageTimestamp: 1700000000,
        deadline,
        http,
      };
      const invocationId = newId('inv');
      const result = payloadJson(await stream.call('context', '', { metadata, invocationId }));
      assert.ok(result.remaining > 8000 && result.remaining <= 10_000, String(result.remaining));
      const keys = {
        trigger: 'http',
        deadline,
        http,
        messageQOS: 1,
        messageTopic: 't/1',
        messageTimestamp: 1700000000,
        functionName: 'context',
        functionInvokeID: invocationId,
        invokeid: invocationId,
      };
      assert.deepEqual(result.spread, keys);
      assert.deepEqual(result.json, keys);
      assert.deepEqual([...result.keys].sort(), Object.keys(keys).sort());
      assert.equal(result.logger && result.signal && result.response, true);
    });

    for (const trigger of ['mqtt', 'timer', 'invoke']) {
      test(`trigger ${trigger}, a past deadline`, async () => {
        const metadata = { trigger, deadline: '2000-01-01T00:00:00Z' };
        const result = payloadJson(await stream.call('context', '', { metadata }));
        assert.equal(result.spread.trigger, trigger);
        assert.equal(result.spread.http, undefined);
        assert.equal(result.remaining, 0);
      });
    }

    test('without trigger_metadata', async () => {
      const invocationId = newId('inv');
      const result = payloadJson(await stream.call('context', '', { invocationId }));
      const keys = {
        trigger: 'invoke',
        messageQOS: 0,
        messageTopic: '',
        messageTimestamp: 0,
        functionName: 'context',
        functionInvokeID: invocationId,
        invokeid: invocationId,
      };
      assert.deepEqual(result, {
        keys: Object.keys(keys),
        spread: keys,
        json: keys,
        remaining: null,
        logger: true,
        signal: true,
        response: true,
      });
    });
  });

  describe('handlers', () => {
    for (const style of ['async', 'sync', 'callback']) {
      test(`${style} handler`, async () => {
        assert.deepEqual(payloadJson(await stream.call(`${style}-echo`, '{"n": 1}')), {
          style,
          event: { n: 1 },
          function: `${style}-echo`,
        });
      });
    }

    const failures = [
      ['fail', '{"why": "no name"}', 'TypeError', 'bad input: no name'],
      ['async-fail', '', 'ValidationError', 'missing'],
      ['callback-fail', '', 'RangeError', 'too far'],
      ['throw-string', '', 'Error', 'plain string'],
    ];
    for (const [name, payload, type, message] of failures) {
      test(`${name}: Failure with type, message and stack, logged first; the worker keeps serving`, async () => {
        const invocationId = newId('inv');
        const response = await stream.call(name, payload, { invocationId });
        assert.equal(response.result.status, 'Failure');
        const { exception } = response.result;
        assert.equal(exception.type, type);
        assert.equal(exception.message, message);
        assert.equal(exception.is_user_exception, true);
        assert.equal(exception.source, '');
        if (name !== 'throw-string') {
          assert.match(exception.stack_trace, /\n {4}at .*handlers\.js:\d+:\d+/);
          assert.doesNotMatch(exception.stack_trace, /lib\/(stream|invoke)\.js|grpc-js|node:internal/);
        }
        assert.equal(response.return_value, null);

        // The stack is logged too, as the function's, before the response.
        const records = stream.logs((r) => r.invocation_id === invocationId);
        assert.equal(records.length, 1);
        assert.equal(records[0].level, 'Error');
        assert.equal(records[0].message, exception.stack_trace);
        assert.equal(records[0].category, name);
        assert.equal(records[0].log_category, 'User');

        assert.deepEqual(payloadJson(await stream.call('describe', '{}')), { type: 'object', value: {} });
      });
    }

    test('unknown function id', async () => {
      const response = await stream.call('nope');
      assert.equal(response.result.status, 'Failure');
      assert.equal(response.result.exception.type, 'FunctionNotFound');
      assert.equal(response.result.exception.message, 'function not found: nope');
    });
  });

  describe('modules', () => {
    const cases = [
      ['one', 'one'],
      ['two', 'two'],
      ['sibling', 'from sibling'],
      ['nested', 'nested path'],
      ['esm', { esm: true, sep: '/', helper: 'esm helper', fn: 'esm' }],
      ['esm-package', 'undefined'],
      ['cjs-object', 'module.exports object'],
      ['esm-default', 'default export'],
    ];
    for (const [name, expected] of cases) {
      test(`${name}`, async () => {
        assert.deepEqual(payloadJson(await stream.call(name)), expected);
      });
    }
  });

  describe('HTTP response objects', () => {
    test('return_value is RpcHttp with status_code, headers and body', async () => {
      const response = await stream.call('created', '{"id": 7}');
      assert.equal(response.result.status, 'Success');
      const { http } = response.return_value;
      assert.equal(response.return_value.data, 'http');
      assert.equal(http.status_code, '201');
      assert.deepEqual(http.headers, { 'x-a': 'b', 'x-n': '5' });
      assert.deepEqual(JSON.parse(http.body.bytes), { id: 7 });
    });

    test('a Buffer body goes out as it is', async () => {
      const { http } = (await stream.call('raw-response')).return_value;
      assert.equal(http.status_code, '202');
      assert.equal(String(http.body.bytes), 'raw body');
    });

    test('a bad status is a function error', async () => {
      const response = await stream.call('bad-status');
      assert.equal(response.result.status, 'Failure');
      assert.equal(response.result.exception.type, 'RangeError');
      assert.equal(response.result.exception.message, 'HTTP status must be an integer from 100 to 599, got 99');
    });
  });

  test('messages over the default grpc size limit, both ways', async () => {
    const big = 6 * 1024 * 1024;
    assert.equal(payloadJson(await stream.call('size', Buffer.alloc(big, 0xff))), big);
    assert.equal((await stream.call('size', json({ size: big }))).return_value.bytes.length, big);
  });

  test('many log records in a burst arrive in order, before the response', async () => {
    const invocationId = newId('inv');
    const n = 2000;
    assert.equal(payloadJson(await stream.call('flood', json({ n }), { invocationId })), n);
    const lines = stream.logs((r) => r.invocation_id === invocationId).map((r) => r.message);
    assert.deepEqual(lines, Array.from({ length: n }, (_, i) => `line ${i}`));
  });

  test('errors nobody catches are logged and the worker keeps serving', async () => {
    assert.equal(payloadJson(await stream.call('stray')), 'returned');
    await stream.waitForLog((r) => r.level === 'Error' && r.message.startsWith('unhandled promise rejection: Error: stray'));
    await stream.waitForLog((r) => r.level === 'Error' && r.message.startsWith('uncaught exception: Error: thrown later'));
    assert.deepEqual(payloadJson(await stream.call('describe', '2')), { type: 'number', value: 2 });
  });

  test('invocations run concurrently', async () => {
    // The handler settles only once three invocations are inside it at the same time.
    const event = json({ group: 'stream', n: 3 });
    const ids = [1, 2, 3].map(() => stream.invoke('rendezvous', event).invocationId);
    for (const id of ids) assert.equal(payloadJson(await stream.result(id)), 3);
  });

  describe('loading', () => {
    for (const [files, entryPoint, type, text] of BROKEN) {
      test(`a load failure is reported (${type}: ${text}) and the worker keeps serving`, async () => {
        const codedir = writeCode(tempDir(), files);
        const functionId = newId('broken');
        const response = await stream.load(functionId, codedir, entryPoint);
        assert.equal(response.function_id, functionId);
        assert.equal(response.result.status, 'Failure');
        const { exception } = response.result;
        assert.equal(exception.type, type);
        assert.ok(exception.message.includes(text), exception.message);
        assert.equal(exception.is_user_exception, type !== 'HandlerLoadError');
        if (type !== 'HandlerLoadError') assert.ok(exception.stack_trace.includes(text), exception.stack_trace);
        const record = await stream.waitForLog(
          (r) => r.level === 'Error' && r.category === functionId && r.message.includes(entryPoint),
          'the load failure, logged',
        );
        assert.equal(record.log_category, 'System');
        assert.equal((await stream.call(functionId)).result.exception.type, 'FunctionNotFound');
        assert.deepEqual(payloadJson(await stream.call('describe', '[1]')), { type: 'array', value: [1] });
      });
    }

    test('an entry point that is not file.export', async () => {
      const response = await stream.load(newId('nodot'), path.join(dir, 'main'), 'nodot');
      assert.equal(response.result.exception.type, 'HandlerLoadError');
      assert.equal(response.result.exception.message, "expected 'file.export', got 'nodot'");
    });

    test('FunctionLoadRequestCollection', async () => {
      const good = newId('good');
      const bad = newId('bad');
      const requestId = stream.send({
        function_load_request_collection: {
          function_load_requests: [
            { function_id: good, metadata: functionMetadata('good', path.join(dir, 'one'), 'index.handler') },
            { function_id: bad, metadata: functionMetadata('bad', path.join(dir, 'one'), 'missing.handler') },
          ],
        },
      });
      const collection = await stream.responseTo(requestId, 'function_load_response_collection');
      const statuses = Object.fromEntries(
        collection.function_load_responses.map((r) => [r.function_id, r.result.status]),
      );
      assert.deepEqual(statuses, { [good]: 'Success', [bad]: 'Failure' });
      assert.deepEqual(payloadJson(await stream.call(good)), 'one');
    });

    test('an invocation sent before the load response', async () => {
      const functionId = newId('eager');
      stream.send({
        function_load_request: {
          function_id: functionId,
          metadata: functionMetadata('eager', path.join(dir, 'two'), 'index.handler'),
        },
      });
      const { invocationId } = stream.invoke(functionId); // without waiting for FunctionLoadResponse
      assert.deepEqual(payloadJson(await stream.result(invocationId)), 'two');
    });
  });

  describe('logs', () => {
    test('function output arrives as RpcLogs tagged with the invocation, before the response', async () => {
      const invocationId = newId('inv');
      const tag = invocationId.slice(-8);
      await stream.call('chatty', json({ tag }), { invocationId });
      const records = stream.logs((r) => r.invocation_id === invocationId);
      assert.deepEqual(Object.fromEntries(records.map((r) => [r.message, r.level])), {
        [`log ${tag}`]: 'Information',
        [`info ${tag}`]: 'Information',
        [`debug ${tag}`]: 'Debug',
        [`warn ${tag}`]: 'Warning',
        [`error ${tag}`]: 'Error',
        [`stdout ${tag}`]: 'Information',
        [`stderr ${tag}`]: 'Error',
        [`logger info ${tag}`]: 'Information',
        [`logger warn ${tag}`]: 'Warning',
        [`after await ${tag}`]: 'Information',
        [`partial ${tag}`]: 'Information', // flushed when the invocation ended
      });
      for (const record of records) {
        assert.equal(record.category, 'chatty');
        assert.equal(record.log_category, 'User');
      }
    });

    test('runtime messages are System RpcLogs; stderr is for before the stream; stdout stays empty', () => {
      const [loaded] = stream.logs((r) => r.message === 'loaded function describe (handler handlers.describe)');
      assert.ok(loaded);
      assert.equal(loaded.log_category, 'System');
      assert.equal(loaded.level, 'Information');
      assert.equal(loaded.invocation_id, '');
      assert.equal(loaded.category, 'describe');

      const records = worker.records();
      assert.ok(records.some((r) => r.msg.startsWith('polyfn node runtime') && r.msg.includes('stream mode')));
      assert.ok(!records.some((r) => r.msg.includes('loaded function'))); // that went to the host
      assert.equal(worker.stdout, '');
    });
  });

  describe('cancel', () => {
    test('InvocationCancel aborts context.signal and answers Cancelled', async () => {
      const { invocationId } = stream.invoke('forever');
      await stream.waitForLog((r) => r.invocation_id === invocationId && r.message === 'started', 'the handler to start');
      stream.send({ invocation_cancel: { invocation_id: invocationId } });
      const response = await stream.result(invocationId);
      assert.equal(response.result.status, 'Cancelled');
      assert.equal(stream.logs((r) => r.invocation_id === invocationId && r.message === 'cancelled').length, 1);

      // Cancels of invocations not in flight are ignored.
      stream.send({ invocation_cancel: { invocation_id: invocationId } });
      stream.send({ invocation_cancel: { invocation_id: 'never-heard-of' } });
      assert.deepEqual(payloadJson(await stream.call('describe', '1')), { type: 'number', value: 1 });
      const responses = stream.received.filter((m) => m.invocation_response?.invocation_id === invocationId);
      assert.equal(responses.length, 1);
    });

    test('a handler that ignores the signal is answered Cancelled when it ends', async () => {
      const release = path.join(tempDir(), 'release');
      const { invocationId } = stream.invoke('wait', json({ release }));
      await stream.waitForLog((r) => r.invocation_id === invocationId && r.message === 'started', 'the handler to start');
      stream.send({ invocation_cancel: { invocation_id: invocationId } });
      await stream.waitForLog((r) => r.invocation_id === invocationId && r.message === 'abort ignored', 'the abort');
      fs.writeFileSync(release, '');
      assert.equal((await stream.result(invocationId)).result.status, 'Cancelled');
      await stream.waitForLog(
        (r) => r.log_category === 'System' && r.level === 'Warning' && r.message.includes(`invocation ${invocationId}`),
        'the warning that it ran to its end',
      );
    });
  });
});
