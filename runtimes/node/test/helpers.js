'use strict';

// Test harness: the real runtime as a child process in its own process
// group, always killed (the whole group) when the test process exits or the
// test's teardown runs.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const RUNTIME = path.join(__dirname, '..', 'bin', 'polyfn-node.js');
const DEFAULT_TIMEOUT = 10_000;

const live = new Set(); // workers not known to have exited
const dirs = new Set();
process.on('exit', () => {
  for (const worker of live) worker.kill();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A new temporary directory, removed when the test process exits. */
function tempDir(prefix = 'polyfn-node-test-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** Write files ({relative path: source}) under dir; return dir. */
function writeCode(dir, files) {
  for (const [name, source] of Object.entries(files)) {
    const file = path.join(dir, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, source);
  }
  return dir;
}

/**
 * Poll condition (sync or async) until it returns something truthy; return
 * that. Fails after timeout ms, naming what it waited for.
 */
async function waitFor(condition, { timeout = DEFAULT_TIMEOUT, what = 'a condition', detail = () => '' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const result = await condition();
    if (result) return result;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeout} ms waiting for ${what}${detail()}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A TCP port nobody listens on (right now). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The environment of the test process without the host's BAETYL_ variables. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('BAETYL_')) env[key] = value;
  }
  return { ...env, ...extra };
}

/** One runtime process, in its own process group. */
class Worker {
  constructor(args, { cwd, env = cleanEnv() } = {}) {
    this.stdout = '';
    this.stderr = '';
    this.exit = null;
    this.child = spawn(process.execPath, [RUNTIME, ...args], {
      cwd,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this);
    this.child.stdout.setEncoding('utf8').on('data', (text) => {
      this.stdout += text;
    });
    this.child.stderr.setEncoding('utf8').on('data', (text) => {
      this.stderr += text;
    });
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        live.delete(this);
        resolve(this.exit);
      });
    });
  }

  get pid() {
    return this.child.pid;
  }

  /** SIGKILL to the whole process group; safe to call more than once. */
  kill() {
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  signal(name) {
    process.kill(this.child.pid, name);
  }

  /** The exit status; fails (with stderr) if the process is still running after timeout ms. */
  async waitExit(timeout = DEFAULT_TIMEOUT) {
    let timer;
    const outcome = await Promise.race([
      this.exited,
      new Promise((resolve) => {
        timer = setTimeout(resolve, timeout, null);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === null) assert.fail(`worker did not exit within ${timeout} ms; stderr:\n${this.stderr}`);
    return outcome.code;
  }

  /** Every complete stderr line, parsed as JSON (a line that is not JSON fails the test). */
  records() {
    const complete = this.stderr.slice(0, this.stderr.lastIndexOf('\n') + 1);
    return complete
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          return assert.fail(`stderr line is not JSON: ${line}`);
        }
      });
  }

  /** Wait until count complete stderr records match predicate; return them. */
  waitForRecords(predicate, { count = 1, what = 'log records', timeout } = {}) {
    return waitFor(
      () => {
        const found = this.records().filter(predicate);
        return found.length >= count ? found : null;
      },
      { timeout, what: `${count} x ${what}`, detail: () => `; stderr:\n${this.stderr}` },
    );
  }

  async waitForRecord(predicate, what) {
    return (await this.waitForRecords(predicate, { what }))[0];
  }
}

module.exports = { DEFAULT_TIMEOUT, RUNTIME, Worker, cleanEnv, freePort, tempDir, waitFor, writeCode };
