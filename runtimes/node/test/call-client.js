'use strict';

// Call mode from the host's side: a runtime process serving a config file,
// and a grpc-js client for baetyl.Function/Call.

const fs = require('node:fs');
const path = require('node:path');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const YAML = require('yaml');

const { DEFAULT_CONFIG_PATH } = require('../lib/config');
const { loadBaetyl } = require('../lib/protos');
const { DEFAULT_TIMEOUT, Worker, cleanEnv, waitFor } = require('./helpers');

const CALL_TIMEOUT = 10_000;
const { Function: FunctionClient } = loadBaetyl();
const { Call } = FunctionClient.service;

/** A runtime in call mode and a client for it; always kill() it. */
class CallWorker extends Worker {
  /**
   * Write config to dir/service.yml and start the runtime there.
   * config: an object (written as YAML) or the file's text.
   * configPath: where to write it; passed with -c unless it is the default.
   * address: undefined → 127.0.0.1:0 (ready() learns the port from the
   * "listening on" record); '' → BAETYL_SERVICE_INSTANCE_ADDRESS unset.
   */
  static async start(dir, config, { address, env = {}, args = [], configPath = 'service.yml' } = {}) {
    const file = path.join(dir, configPath);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, typeof config === 'string' ? config : YAML.stringify(config));
    const where = address ?? '127.0.0.1:0';
    const extra = where ? { BAETYL_SERVICE_INSTANCE_ADDRESS: where } : {};
    const configArgs = configPath === DEFAULT_CONFIG_PATH ? [] : ['-c', file];
    return new CallWorker([...configArgs, ...args], { cwd: dir, env: cleanEnv({ ...extra, ...env }) }, where);
  }

  constructor(args, options, address) {
    super(args, options);
    this.address = address;
    this.client = null;
  }

  kill() {
    this.client?.close();
    this.client = null;
    super.kill();
  }

  connect() {
    // Retry quickly while the worker starts (grpc-js waits 1 s after a failed attempt by default).
    this.client ??= new FunctionClient(this.address, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': -1,
      'grpc.initial_reconnect_backoff_ms': 10,
      'grpc.max_reconnect_backoff_ms': 100,
    });
    return this.client;
  }

  /** Wait until the worker says it listens and accepts connections; fails if it exits first. */
  async ready(timeout = DEFAULT_TIMEOUT) {
    const deadline = Date.now() + timeout;
    const listening = await waitFor(
      () => {
        if (this.exit) assert.fail(`worker exited with ${this.exit.code}; stderr:\n${this.stderr}`);
        return this.records().find((r) => r.source === 'runtime' && r.msg.startsWith('listening on '));
      },
      { timeout, what: 'the worker to listen', detail: () => `; stderr:\n${this.stderr}` },
    );
    this.address = listening.msg.slice('listening on '.length);
    const client = this.connect();
    for (;;) {
      const error = await new Promise((resolve) => client.waitForReady(Date.now() + 100, resolve));
      if (!error) return this;
      if (this.exit) assert.fail(`worker exited with ${this.exit.code}; stderr:\n${this.stderr}`);
      if (Date.now() > deadline) assert.fail(`worker not ready within ${timeout} ms; stderr:\n${this.stderr}`);
    }
  }

  /**
   * Call function with payload and FunctionMessage fields; resolves with
   * {reply, header} (header: the response header metadata), rejects with the
   * gRPC error.
   */
  call(function_, payload = Buffer.alloc(0), fields = {}, { metadata = new grpc.Metadata(), timeout = CALL_TIMEOUT } = {}) {
    const client = this.connect();
    const request = { FunctionName: function_, Payload: Buffer.from(payload), ...fields };
    const options = timeout === null ? {} : { deadline: Date.now() + timeout };
    return new Promise((resolve, reject) => {
      let header = new grpc.Metadata();
      const call = client.Call(request, metadata, options, (err, reply) => {
        if (err) reject(err);
        else resolve({ reply, header });
      });
      call.on('metadata', (received) => {
        header = received;
      });
    });
  }

  /** The reply's Payload. */
  async payload(function_, payload, fields) {
    return (await this.call(function_, payload, fields)).reply.Payload;
  }

  /** The reply's Payload, JSON-decoded. */
  async json(function_, payload, fields) {
    return JSON.parse((await this.payload(function_, payload, fields)).toString('utf8'));
  }

  /** The gRPC error of a call that must fail. */
  async error(function_, payload, fields, options) {
    try {
      await this.call(function_, payload, fields, options);
    } catch (err) {
      return err;
    }
    return assert.fail(`the call of ${function_} succeeded`);
  }

  /** A call with raw request bytes; resolves with the raw reply. */
  raw(bytes) {
    const client = this.connect();
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        Call.path,
        (data) => data,
        (data) => data,
        bytes,
        new grpc.Metadata(),
        { deadline: Date.now() + CALL_TIMEOUT },
        (err, reply) => (err ? reject(err) : resolve(reply)),
      );
    });
  }
}

module.exports = { Call, CallWorker };
