'use strict';

// Stream mode: launch arguments, WorkerTerminate, signals, environment
// reload, and losing the host. A host and a worker per test.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test } = require('node:test');

const { CODE, FUNCTIONS } = require('./fixtures');
const { Worker, freePort, tempDir, writeCode } = require('./helpers');
const { Host, StreamWorker, newId } = require('./stream-host');

/** A fresh host and worker for test t (both torn down when it ends); returns {dir, host, worker, stream}. */
async function launch(t, options = {}) {
  const dir = writeCode(tempDir(), CODE);
  const host = await Host.start();
  t.after(() => host.stop());
  const worker = new StreamWorker(dir, host.port, options);
  t.after(() => worker.kill());
  const stream = await host.accept(worker);
  return { dir, host, worker, stream };
}

async function loadAll(stream, dir) {
  assert.equal((await stream.init()).result.status, 'Success');
  for (const [name, entryPoint] of Object.entries(FUNCTIONS)) {
    assert.equal((await stream.load(name, path.join(dir, 'main'), entryPoint)).result.status, 'Success');
  }
}

function terminate(stream, graceSeconds) {
  const seconds = Math.floor(graceSeconds);
  const nanos = Math.round((graceSeconds - seconds) * 1e9);
  stream.send({ worker_terminate: graceSeconds === undefined ? {} : { grace_period: { seconds, nanos } } });
}

/** Start the "wait" handler; resolves with its invocation id and release file once it runs. */
async function startWaiting(stream, dir) {
  const release = path.join(dir, `release-${newId()}`);
  const { invocationId } = stream.invoke('wait', JSON.stringify({ release }));
  await stream.waitForLog((r) => r.invocation_id === invocationId && r.message === 'started', 'the handler to start');
  return { invocationId, release };
}

describe('stream mode lifecycle', { concurrency: 4 }, () => {
  for (const spelling of ['classic', 'functions', 'polyfn']) {
    test(`either argument spelling is enough: ${spelling}`, async (t) => {
      const { dir, worker, stream } = await launch(t, { spelling });
      const first = await stream.waitFor(() => true);
      assert.equal(first.content, 'start_stream');
      assert.equal(first.start_stream.worker_id, worker.workerId);
      assert.equal(first.request_id, worker.requestId);
      assert.equal((await stream.init()).result.status, 'Success');
      assert.equal((await stream.load('one', path.join(dir, 'one'), 'index.handler')).result.status, 'Success');
      assert.equal(String((await stream.call('one')).return_value.bytes), '"one"');
    });
  }

  test('a worker id from the environment stays off the command line', async (t) => {
    const { dir, worker, stream } = await launch(t, { spelling: 'polyfn' });
    const first = await stream.waitFor(() => true);
    assert.equal(first.start_stream.worker_id, worker.workerId);
    const cmdline = fs.readFileSync(`/proc/${worker.child.pid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes(worker.workerId), cmdline);
    // Functions (and what they start) do not see it either.
    await loadAll(stream, dir);
    const seen = JSON.parse((await stream.call('environment')).return_value.bytes);
    assert.equal(seen.env.POLYFN_WORKER_ID, undefined);
  });

  test('unknown arguments are ignored with a warning', async (t) => {
    const { dir, worker, stream } = await launch(t, { extraArgs: ['--unknown-flag', 'value', '--stdio'] });
    assert.equal((await stream.init()).result.status, 'Success');
    assert.equal((await stream.load('one', path.join(dir, 'one'), 'index.handler')).result.status, 'Success');
    assert.equal(String((await stream.call('one')).return_value.bytes), '"one"');
    const warnings = worker.records().filter((r) => r.level === 'warning');
    assert.deepEqual(
      warnings.map((r) => r.msg),
      ['ignoring unknown arguments: --unknown-flag value --stdio'],
    );
  });

  const badArgs = [
    [['--host', '127.0.0.1', '--workerId', 'w'], '--host and --port go together'],
    [['--functions-uri', 'http://127.0.0.1:9/'], 'needs a worker id'],
    [['--functions-uri', 'not a uri', '--functions-worker-id', 'w'], "--functions-uri 'not a uri'"],
    [['--port', '70000', '--host', '127.0.0.1', '--workerId', 'w'], 'port 70000 is out of range'],
    [['--port', 'many'], "argument --port: invalid integer value: 'many'"],
    [['--workerId'], 'argument --workerId: expected a value'],
  ];
  for (const [args, expected] of badArgs) {
    test(`bad launch arguments exit 2: ${args.join(' ')}`, async (t) => {
      const worker = new Worker(args, { cwd: tempDir() });
      t.after(() => worker.kill());
      assert.equal(await worker.waitExit(), 2);
      assert.ok(worker.stderr.includes(expected), worker.stderr);
    });
  }

  test('WorkerTerminate lets the invocation in flight finish, then the worker exits 0', async (t) => {
    const { dir, worker, stream } = await launch(t);
    await loadAll(stream, dir);
    const { invocationId, release } = await startWaiting(stream, dir);

    terminate(stream, 20);
    await stream.waitForLog((r) => r.message === 'stopping: no new invocations, up to 20s for 1 in flight', 'stopping');
    // No new invocations once stopping...
    const refused = await stream.call('describe');
    assert.equal(refused.result.status, 'Failure');
    assert.equal(refused.result.exception.type, 'WorkerStopping');
    assert.equal(worker.exit, null);

    // ...but the one in flight completes, then the worker closes the stream and exits 0.
    fs.writeFileSync(release, '');
    assert.equal(String((await stream.result(invocationId)).return_value.bytes), '"released"');
    await stream.waitEnded();
    assert.equal(await worker.waitExit(), 0);
    assert.ok(worker.records().some((r) => r.msg === 'stopped')); // stderr, once the stream is closed
  });

  test('WorkerTerminate without a grace period, nothing in flight', async (t) => {
    const { dir, worker, stream } = await launch(t);
    await loadAll(stream, dir);
    terminate(stream);
    await stream.waitForLog((r) => r.message === 'received WorkerTerminate (grace period 30s)', 'the default grace');
    await stream.waitEnded();
    assert.equal(await worker.waitExit(), 0);
  });

  test('the WorkerTerminate grace period expires: exit 0 anyway', async (t) => {
    const { dir, worker, stream } = await launch(t);
    await loadAll(stream, dir);
    const { invocationId } = await startWaiting(stream, dir);
    terminate(stream, 0.1);
    assert.equal(await worker.waitExit(), 0);
    assert.equal(stream.received.filter((m) => m.invocation_response?.invocation_id === invocationId).length, 0);
    await stream.waitForLog((r) => r.message === '1 invocation(s) still running after the grace period', 'the warning');
  });

  for (const signal of ['SIGTERM', 'SIGINT']) {
    test(`${signal} drains like WorkerTerminate`, async (t) => {
      const { dir, worker, stream } = await launch(t);
      await loadAll(stream, dir);
      const { invocationId, release } = await startWaiting(stream, dir);
      worker.signal(signal);
      await stream.waitForLog((r) => r.message.startsWith('stopping: no new invocations, up to 30s'), 'stopping');
      fs.writeFileSync(release, '');
      assert.equal(String((await stream.result(invocationId)).return_value.bytes), '"released"');
      assert.equal(await worker.waitExit(), 0);
    });
  }

  test('FunctionEnvironmentReloadRequest replaces the environment and the working directory', async (t) => {
    const { dir, stream } = await launch(t, { env: { POLYFN_STREAM_OLD: 'gone after the reload' } });
    await loadAll(stream, dir);
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    const environment = { POLYFN_STREAM_TEST: 'yes', PATH: process.env.PATH ?? '/usr/bin' };
    const requestId = stream.send({
      function_environment_reload_request: { environment_variables: environment, function_app_directory: app },
    });
    const response = await stream.responseTo(requestId, 'function_environment_reload_response');
    assert.equal(response.result.status, 'Success');
    assert.equal(response.capabilities.HandlesInvocationCancelMessage, 'true');
    assert.equal(response.worker_metadata.runtime_name, 'node');

    const seen = JSON.parse((await stream.call('environment')).return_value.bytes);
    assert.deepEqual(seen, { env: environment, cwd: fs.realpathSync(app) });
  });

  test('the host goes away: exit 1', async (t) => {
    const { worker, stream, host } = await launch(t);
    assert.equal((await stream.init()).result.status, 'Success');
    host.stop();
    assert.equal(await worker.waitExit(), 1);
    assert.ok(worker.stderr.includes('lost the stream to the host'), worker.stderr);
  });

  test('the host closes the stream: exit 1', async (t) => {
    const { worker, stream } = await launch(t);
    assert.equal((await stream.init()).result.status, 'Success');
    stream.close();
    assert.equal(await worker.waitExit(), 1);
    assert.ok(worker.stderr.includes('lost the stream to the host at 127.0.0.1:'), worker.stderr);
    assert.ok(worker.stderr.includes('the host closed the stream'), worker.stderr);
  });

  test('no host: exit 1', async (t) => {
    const port = await freePort(); // nobody listens there
    const worker = new StreamWorker(tempDir(), port);
    t.after(() => worker.kill());
    assert.equal(await worker.waitExit(), 1);
    assert.ok(worker.stderr.includes('lost the stream to the host'), worker.stderr);
  });
});
