'use strict';

// Call mode: starting, failing to start, and stopping the worker process.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { describe, test } = require('node:test');
const grpc = require('@grpc/grpc-js');

const { CallWorker } = require('./call-client');
const { BROKEN, CODE } = require('./fixtures');
const { tempDir, writeCode } = require('./helpers');

/** A worker killed (its process group) when test t ends. */
async function start(t, dir, config, options) {
  const worker = await CallWorker.start(dir, config, options);
  t.after(() => worker.kill());
  return worker;
}

const WAIT_FUNCTIONS = [
  { name: 'wait', handler: 'handlers.waitForRelease', codedir: 'main' },
  { name: 'describe', handler: 'handlers.describe', codedir: 'main' },
];

function event(value) {
  return Buffer.from(JSON.stringify(value));
}

// Independent workers: a few at a time.
describe('call mode lifecycle', { concurrency: 4 }, () => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    test(`${signal} lets the invocation in flight finish, refuses new calls and exits 0`, async (t) => {
      const dir = writeCode(tempDir(), CODE);
      const worker = await start(t, dir, { functions: WAIT_FUNCTIONS, server: { grace: 20 } });
      await worker.ready();
      const release = path.join(dir, 'release');
      const inFlight = worker.call('wait', event({ release }), { FunctionInvokeID: 'in-flight' });
      await worker.waitForRecord((r) => r.invocation_id === 'in-flight' && r.msg === 'started', 'the handler to start');

      worker.signal(signal);
      await worker.waitForRecord((r) => r.msg === 'stopping: no new calls, up to 20s for calls in flight', 'stopping');
      // No new calls once stopping...
      const refused = await worker.error('describe', '{}', {}, { timeout: 5000 });
      assert.equal(refused.code, grpc.status.UNAVAILABLE);
      assert.equal(worker.exit, null);

      // ...but the one in flight completes.
      fs.writeFileSync(release, '');
      const { reply } = await inFlight;
      assert.equal(String(reply.Payload), '"released"');
      assert.equal(await worker.waitExit(), 0);
      assert.ok(worker.records().some((r) => r.msg === 'stopped'));
    });
  }

  test('the grace period expires: exit 0 anyway, the call in flight fails', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const worker = await start(t, dir, { functions: WAIT_FUNCTIONS, server: { grace: 0.2 } });
    await worker.ready();
    const inFlight = worker.call('wait', event({ release: path.join(dir, 'never') }), { FunctionInvokeID: 'stuck' });
    inFlight.catch(() => {});
    await worker.waitForRecord((r) => r.invocation_id === 'stuck' && r.msg === 'started', 'the handler to start');
    worker.signal('SIGTERM');
    assert.equal(await worker.waitExit(), 0);
    await assert.rejects(inFlight);
    assert.ok(worker.records().some((r) => r.msg === '1 invocation(s) still running after the grace period: exiting anyway'));
  });

  test('a unix socket address', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const socket = path.join(dir, 'worker.sock');
    const worker = await start(t, dir, { functions: WAIT_FUNCTIONS }, { address: `unix:${socket}` });
    await worker.ready();
    assert.deepEqual(await worker.json('describe', '{"via": "unix"}'), { type: 'object', value: { via: 'unix' } });
    worker.signal('SIGTERM');
    assert.equal(await worker.waitExit(), 0);
    assert.equal(fs.existsSync(socket), false);
    assert.equal(worker.stdout, '');
  });

  test('unknown arguments are ignored with a warning', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const worker = await start(t, dir, { functions: WAIT_FUNCTIONS }, { args: ['--unknown-flag', 'value', '--stdio'] });
    await worker.ready();
    assert.deepEqual(await worker.json('describe', '1'), { type: 'number', value: 1 });
    const warnings = worker.records().filter((r) => r.level === 'warning');
    assert.deepEqual(
      warnings.map((r) => r.msg),
      ['ignoring unknown arguments: --unknown-flag value --stdio'],
    );
  });

  for (const [files, handler, type, text] of BROKEN) {
    test(`a handler that cannot be loaded (${type}: ${text}) exits 1 before listening`, async (t) => {
      const dir = writeCode(tempDir(), { 'good/ok.js': 'exports.handler = () => null;\n' });
      writeCode(dir, Object.fromEntries(Object.entries(files).map(([name, source]) => [`code/${name}`, source])));
      fs.mkdirSync(path.join(dir, 'code'), { recursive: true });
      const worker = await start(t, dir, {
        functions: [
          { name: 'fine', handler: 'ok.handler', codedir: 'good' },
          { name: 'broken', handler, codedir: 'code' },
        ],
      });
      assert.equal(await worker.waitExit(), 1);
      const errors = worker.records().filter((r) => r.level === 'error');
      assert.equal(errors.length, 1, worker.stderr);
      assert.equal(errors[0].function, 'broken');
      assert.ok(errors[0].msg.startsWith(`function broken: cannot load handler '${handler}': `), errors[0].msg);
      assert.ok(errors[0].msg.includes(text), errors[0].msg);
      assert.ok(!worker.records().some((r) => r.msg.startsWith('listening')));
    });
  }

  test('a module that throws while loading: its stack is logged', async (t) => {
    const dir = writeCode(tempDir(), { 'code/bad.js': 'function helper() {\n  return null.x;\n}\nhelper();\n' });
    const worker = await start(t, dir, { functions: [{ name: 'broken', handler: 'bad.handler', codedir: 'code' }] });
    assert.equal(await worker.waitExit(), 1);
    const [error] = worker.records().filter((r) => r.level === 'error');
    assert.match(error.msg, /TypeError: Cannot read properties of null \(reading 'x'\)\n {4}at helper \(.*bad\.js:2:\d+\)/);
  });

  const badConfigs = [
    [{ functions: [{ name: 'f', handler: 'nodot', codedir: '.' }] }, 'functions[0].handler'],
    [{ functions: [{ handler: 'a.b' }] }, 'functions[0].name'],
    [{ functions: [] }, 'functions'],
    [{ functions: [{ name: 'f', handler: 'a.b' }, { name: 'f', handler: 'a.b' }] }, "duplicate function name 'f'"],
    [{ functions: [{ name: 'f', handler: 'a.b' }], server: { grace: 'soon' } }, 'server.grace'],
    ['functions: [', 'invalid YAML'],
  ];
  for (const [config, expected] of badConfigs) {
    test(`a bad config exits 1: ${expected}`, async (t) => {
      const dir = tempDir();
      const worker = await start(t, dir, config);
      assert.equal(await worker.waitExit(), 1);
      const errors = worker.records().filter((r) => r.level === 'error');
      assert.equal(errors.length, 1, worker.stderr);
      assert.ok(errors[0].msg.startsWith(`${path.join(dir, 'service.yml')}: `), errors[0].msg);
      assert.ok(errors[0].msg.includes(expected), errors[0].msg);
    });
  }

  test('no address to listen on exits 2', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const worker = await start(t, dir, { functions: WAIT_FUNCTIONS }, { address: '' });
    assert.equal(await worker.waitExit(), 2);
    assert.ok(worker.stderr.includes('BAETYL_SERVICE_INSTANCE_ADDRESS'));
  });

  test('an address in use exits 1', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const taken = net.createServer();
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const worker = await start(t, dir, { functions: WAIT_FUNCTIONS }, { address: `127.0.0.1:${taken.address().port}` });
      assert.equal(await worker.waitExit(), 1);
      assert.ok(worker.records().some((r) => r.level === 'error' && r.msg.startsWith('cannot listen on 127.0.0.1:')));
    } finally {
      taken.close();
    }
  });

  test('the default config file is etc/baetyl/service.yml', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const config = { functions: [{ name: 'describe', handler: 'handlers.describe', codedir: 'main' }] };
    const worker = await start(t, dir, config, { configPath: 'etc/baetyl/service.yml' });
    await worker.ready();
    assert.deepEqual(await worker.json('describe', '[1]'), { type: 'array', value: [1] });
  });
});
