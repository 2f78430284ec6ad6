'use strict';

// Call mode's standby: a worker started before it has a function.
//
// polyfn's host starts `polyfn-node -c FILE --standby` with its standard
// input a Unix socket to the host, and the runtime's environment alone. The
// worker loads what call mode needs, then:
//
// 1. writes "ready\n";
// 2. reads one line, a JSON object {"env": {NAME: VALUE, ...}}: its whole
//    environment, as a worker started for the function gets it
//    (BAETYL_SERVICE_INSTANCE_ADDRESS included). By then the host has
//    written FILE;
// 3. replaces its environment with it and runs call mode with FILE as at a
//    normal start;
// 4. writes "serving\n" once it listens, and gives its standard input back
//    to /dev/null.
//
// End of input before the line (the host stopped without binding it) exits
// with status 0. The wait is a blocking read: a signal ends the process as
// it would any process that has no handler. See docs/protocols.md.

const fs = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const READY = 'ready\n';
const SERVING = 'serving\n';
// The most the host's line may hold: an environment larger than Linux
// passes to a new process could not have started a worker either.
const MAX_LINE = 4 << 20;
const HANDSHAKE_FD = 0;

/** The host's line is not a standby claim. */
class HandshakeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HandshakeError';
  }
}

/**
 * Load what call mode runs with, so that a claim costs none of it: the
 * modules, the protocol, the YAML parser's first parse, the ES module
 * loader's first import() (about 40 ms together on a loaded machine), and
 * one invocation of a no-op through a call-mode server of its own on a
 * socket in the working directory (the first connection and call of a
 * process cost 50-100 ms there).
 */
async function warm() {
  require('./protos').loadBaetyl();
  require('yaml').parse('name: standby\nfunctions:\n  - {name: f, handler: index.f, codedir: .}\n');
  await import(pathToFileURL(path.join(__dirname, 'version.js')).href);
  const sock = path.resolve('.standby-warm.sock');
  try {
    await warmCall(sock);
  } catch (err) {
    require('./logs').log.debug(`standby: the warm-up invocation failed: ${err.message}`);
  } finally {
    fs.rmSync(sock, { force: true });
  }
}

// WARM_TIMEOUT_MS bounds the warm-up invocation.
const WARM_TIMEOUT_MS = 5000;

/** One invocation of a no-op function through a call-mode server on sock, over HTTP/2 as the host sends it. */
async function warmCall(sock) {
  const grpc = require('@grpc/grpc-js');
  const http2 = require('node:http2');
  const net = require('node:net');
  const { Calls, SERVER_OPTIONS, bind, rawCallService } = require('./call');
  const name = 'polyfn-standby-warm-up';
  const calls = new Calls(new Map([[name, { name, handler: () => null, spec: name, file: '' }]]));
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(rawCallService(), { Call: (call, callback) => calls.call(call, callback) });
  await bind(server, `unix:${sock}`);
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(sock) });
  try {
    await /** @type {Promise<void>} */ (
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('timed out')), WARM_TIMEOUT_MS);
        session.on('error', reject);
        // FunctionMessage{FunctionName (field 11): name}, in a gRPC frame.
        const message = Buffer.concat([Buffer.from([(11 << 3) | 2, name.length]), Buffer.from(name)]);
        const frame = Buffer.alloc(5);
        frame.writeUInt32BE(message.length, 1);
        const req = session.request({
          ':method': 'POST',
          ':path': '/baetyl.Function/Call',
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        req.on('trailers', (trailers) => {
          clearTimeout(timer);
          if (trailers['grpc-status'] === '0') resolve(undefined);
          else reject(new Error(`grpc-status ${trailers['grpc-status']}: ${trailers['grpc-message']}`));
        });
        req.on('error', reject);
        req.resume();
        req.end(Buffer.concat([frame, message]));
      })
    );
  } finally {
    session.destroy();
    server.forceShutdown();
  }
}

/** Say ready and wait for the host's claim; return the environment, or null at end of input. */
function claim(fd = HANDSHAKE_FD) {
  fs.writeSync(fd, READY);
  const chunks = [];
  let length = 0;
  const buf = Buffer.allocUnsafe(1 << 16);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) return null;
    const chunk = Buffer.from(buf.subarray(0, n));
    const nl = chunk.indexOf(10);
    chunks.push(nl < 0 ? chunk : chunk.subarray(0, nl));
    length += n;
    if (nl >= 0) break;
    if (length > MAX_LINE) throw new HandshakeError(`the host's line is longer than ${MAX_LINE} bytes`);
  }
  let message;
  try {
    message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new HandshakeError(`the host's line is not JSON: ${err.message}`);
  }
  const env = message !== null && typeof message === 'object' ? message.env : undefined;
  if (env === null || typeof env !== 'object' || Array.isArray(env) || !Object.values(env).every((v) => typeof v === 'string')) {
    throw new HandshakeError('the host\'s line has no "env" object of strings');
  }
  return env;
}

/** Make env the process's whole environment. */
function apply(env) {
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
}

/** Tell the host the worker listens, and give standard input back to /dev/null. */
function serving(fd = HANDSHAKE_FD) {
  try {
    fs.writeSync(fd, SERVING);
  } catch {
    // The host gave up on the handshake; it sees the worker listen anyway.
  }
  // Node.js has no dup2: close fd 0 and open /dev/null, which takes the
  // lowest free descriptor, 0. Nothing else opens a file in between: this
  // runs synchronously on the main thread, with no file operation queued.
  fs.closeSync(fd);
  const null_ = fs.openSync('/dev/null', 'r');
  if (null_ !== fd) fs.closeSync(null_);
}

module.exports = { HandshakeError, MAX_LINE, apply, claim, serving, warm };
