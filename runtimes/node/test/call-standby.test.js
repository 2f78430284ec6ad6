'use strict';

// Call mode's standby (lib/standby.js): a worker started with --standby
// whose standard input is a socket to the host.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test } = require('node:test');
const grpc = require('@grpc/grpc-js');
const YAML = require('yaml');

const { loadBaetyl } = require('../lib/protos');
const { RUNTIME, tempDir, writeCode } = require('./helpers');

const TIMEOUT = 15_000;
const CODE = {
  'main/fn.js': `exports.env = () => ({ greeting: process.env.GREETING, name: process.env.BAETYL_SERVICE_INSTANCE_NAME });\n`,
};

/**
 * Start a standby in dir: the shell puts the socket the test holds
 * (stdio[3], a socket pair) on the worker's standard input.
 */
function startStandby(t, dir) {
  const config = path.join(dir, 'service.yml');
  const child = spawn('/bin/sh', ['-c', 'exec "$0" "$1" -c "$2" --standby <&3 3<&-', process.execPath, RUNTIME, config], {
    cwd: dir,
    env: { PATH: process.env.PATH, NOT_KEPT: '1' },
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const socket = child.stdio[3];
  let buffered = '';
  const waiters = [];
  socket.on('data', (d) => {
    buffered += d;
    for (let nl = buffered.indexOf('\n'); nl >= 0 && waiters.length; nl = buffered.indexOf('\n')) {
      waiters.shift()(buffered.slice(0, nl + 1));
      buffered = buffered.slice(nl + 1);
    }
  });
  socket.on('end', () => {
    while (waiters.length) waiters.shift()('');
  });
  socket.on('error', () => {});
  t.after(() => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return {
    child,
    config,
    socket,
    exited,
    stderr: () => stderr,
    line: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no handshake line within ${TIMEOUT} ms; stderr:\n${stderr}`)), TIMEOUT);
        waiters.push((l) => {
          clearTimeout(timer);
          resolve(l);
        });
        socket.emit('data', ''); // a line already buffered
      }),
  };
}

describe('call mode standby', { concurrency: 3 }, () => {
  test('a claimed standby serves with the environment the host sent', async (t) => {
    const dir = writeCode(tempDir(), CODE);
    const sb = startStandby(t, dir);
    assert.equal(await sb.line(), 'ready\n');
    // The warm-up invocation's server is gone with its socket.
    assert.equal(fs.existsSync(path.join(dir, '.standby-warm.sock')), false);
    fs.writeFileSync(sb.config, YAML.stringify({ functions: [{ name: 'env', handler: 'fn.env', codedir: 'main' }] }));
    const sock = path.join(dir, 'worker.sock');
    const env = {
      PATH: process.env.PATH,
      GREETING: 'hello',
      BAETYL_SERVICE_INSTANCE_ADDRESS: `unix:${sock}`,
      BAETYL_SERVICE_INSTANCE_NAME: 'env-1',
    };
    sb.socket.write(`${JSON.stringify({ env })}\n`);
    assert.equal(await sb.line(), 'serving\n');
    const { Function: FunctionClient } = loadBaetyl();
    const client = new FunctionClient(`unix:${sock}`, grpc.credentials.createInsecure());
    t.after(() => client.close());
    const reply = await new Promise((resolve, reject) =>
      client.Call({ FunctionName: 'env' }, { deadline: Date.now() + TIMEOUT }, (err, r) => (err ? reject(err) : resolve(r))),
    );
    assert.deepEqual(JSON.parse(String(reply.Payload)), { greeting: 'hello', name: 'env-1' });
    // Given back to /dev/null before the worker's event loop took a call.
    assert.equal(fs.readlinkSync(`/proc/${sb.child.pid}/fd/0`), '/dev/null');
    process.kill(sb.child.pid, 'SIGTERM');
    assert.deepEqual(await sb.exited, { code: 0, signal: null });
  });

  test('end of input before the claim exits 0', async (t) => {
    const sb = startStandby(t, tempDir());
    assert.equal(await sb.line(), 'ready\n');
    sb.socket.end();
    assert.deepEqual(await sb.exited, { code: 0, signal: null });
  });

  test('a claim that is not an environment exits 2', async (t) => {
    const sb = startStandby(t, tempDir());
    assert.equal(await sb.line(), 'ready\n');
    sb.socket.write('{"env": {"A": 1}}\n');
    assert.deepEqual(await sb.exited, { code: 2, signal: null });
    assert.match(sb.stderr(), /standby: the host's line has no .*env.* object of strings/);
  });
});
