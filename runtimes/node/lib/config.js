'use strict';

// Call mode's config file (Baetyl service.yml), its environment overrides,
// and stream mode's launch options.
//
//   name: sayhi-runtime            # optional
//   functions:                     # required, at least one
//     - name: sayhi
//       handler: index.handler     # file.export, relative to codedir
//       codedir: var/db/baetyl/function-sayhi   # default "."
//   server:                        # optional
//     address: 127.0.0.1:50051     # overridden by BAETYL_SERVICE_INSTANCE_ADDRESS
//     grace: 30                    # seconds to finish in-flight calls on SIGTERM
//
// Unknown keys are ignored, so config files written for Baetyl (or for the
// Python runtime) load unchanged.

const fs = require('node:fs');
const util = require('node:util');

const { validHandler } = require('./loader');

const DEFAULT_CONFIG_PATH = 'etc/baetyl/service.yml';
const ADDRESS_ENV = 'BAETYL_SERVICE_INSTANCE_ADDRESS';
const NAME_ENV = 'BAETYL_SERVICE_INSTANCE_NAME';
// polyfn's host passes the worker id here rather than on the command line,
// which every local user can read (/proc/PID/cmdline).
const WORKER_ID_ENV = 'POLYFN_WORKER_ID';
const DEFAULT_GRACE = 30;
const MAX_MESSAGE_LENGTH = 2147483647;

/** The config or the launch arguments cannot be used. */
class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * Read and validate the config file at file, then apply the environment's overrides.
 * @returns {{name: string|null, functions: {name: string, handler: string, codedir: string}[],
 *            server: {address: string|null, grace: number}}}
 * @throws {ConfigError} naming the file
 */
function loadConfig(file, env = process.env) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read config file: ${err.message}`);
  }
  let data;
  try {
    // Required here, not at the top: a stream worker reads no config file.
    data = require('yaml').parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: invalid YAML: ${err.message}`);
  }
  try {
    return parseConfig(data, env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`${file}: ${err.message}`);
    throw err;
  }
}

/** Validate an already decoded config document. */
function parseConfig(data, env = process.env) {
  if (!isMapping(data)) throw new ConfigError("the config must be a mapping with a 'functions' list");
  const name = optionalString(data, 'name', 'name');
  const functions = parseFunctions(data.functions);
  const server = parseServer(data.server);
  return {
    name: env[NAME_ENV] || name,
    functions,
    server: { address: env[ADDRESS_ENV] || server.address, grace: server.grace },
  };
}

function isMapping(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function parseFunctions(raw) {
  if (raw === undefined || raw === null) {
    throw new ConfigError('functions: required, a list of {name, handler, codedir}');
  }
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new ConfigError('functions: must be a non-empty list of {name, handler, codedir}');
  }
  const seen = new Set();
  return raw.map((item, index) => {
    const where = `functions[${index}]`;
    if (!isMapping(item)) throw new ConfigError(`${where}: must be a mapping with name, handler and codedir`);
    const name = requiredString(item, 'name', `${where}.name`);
    if (seen.has(name)) throw new ConfigError(`${where}.name: duplicate function name '${name}'`);
    seen.add(name);
    const handler = requiredString(item, 'handler', `${where}.handler`);
    if (!validHandler(handler)) {
      throw new ConfigError(`${where}.handler: expected 'file.export', got '${handler}'`);
    }
    const codedir = optionalString(item, 'codedir', `${where}.codedir`) || '.';
    return { name, handler, codedir };
  });
}

function parseServer(raw) {
  if (raw === undefined || raw === null) return { address: null, grace: DEFAULT_GRACE };
  if (!isMapping(raw)) throw new ConfigError('server: must be a mapping');
  const address = optionalString(raw, 'address', 'server.address');
  const grace = raw.grace ?? DEFAULT_GRACE;
  if (typeof grace !== 'number' || !Number.isFinite(grace) || grace < 0) {
    throw new ConfigError(`server.grace: must be a non-negative number of seconds, got ${util.inspect(grace)}`);
  }
  return { address, grace };
}

function requiredString(mapping, key, where) {
  const value = optionalString(mapping, key, where);
  if (!value) throw new ConfigError(`${where}: required, a non-empty string`);
  return value;
}

function optionalString(mapping, key, where) {
  const value = mapping[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') {
    throw new ConfigError(`${where}: must be a string, got ${Array.isArray(value) ? 'array' : typeof value}`);
  }
  return value;
}

/**
 * Stream mode's options from the two argument spellings the host passes, or
 * null when neither asks for stream mode. --host/--port and --functions-uri
 * are alternatives (the host sends both); when both are given, --host/--port
 * win. The worker id comes from --workerId, --functions-worker-id or, as
 * polyfn's host passes it, env.POLYFN_WORKER_ID.
 * @throws {ConfigError} stream mode is asked for but cannot run
 */
function streamOptions(args, env = {}) {
  let { host, port } = args;
  if (host === undefined && port === undefined && args.functionsUri === undefined) return null;
  if (host === undefined || port === undefined) {
    if (args.functionsUri === undefined) {
      throw new ConfigError('--host and --port go together (or pass --functions-uri http://HOST:PORT/)');
    }
    ({ host, port } = splitUri(args.functionsUri));
  }
  if (!(port > 0 && port < 65536)) throw new ConfigError(`port ${port} is out of range`);
  const workerId = args.workerId || args.functionsWorkerId || env[WORKER_ID_ENV];
  if (!workerId) {
    throw new ConfigError(`stream mode needs a worker id: --workerId, --functions-worker-id or ${WORKER_ID_ENV}`);
  }
  const length = args.maxMessageLength || args.functionsMaxMessageLength || MAX_MESSAGE_LENGTH;
  if (length < 1) throw new ConfigError(`max message length must be positive, got ${length}`);
  const bareHost = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return {
    host: bareHost,
    port,
    target: `${bareHost.includes(':') ? `[${bareHost}]` : bareHost}:${port}`,
    workerId,
    requestId: args.requestId || args.functionsRequestId || '',
    maxMessageLength: Math.min(length, MAX_MESSAGE_LENGTH),
  };
}

function splitUri(uri) {
  const match = /^(?:(?:[A-Za-z][A-Za-z0-9+.-]*:)?\/\/)?(\[[^\]\s]+\]|[^:/?#\s[\]]+):(\d+)(?:[/?#]\S*)?$/.exec(uri);
  if (!match) throw new ConfigError(`--functions-uri '${uri}': expected http://HOST:PORT/`);
  return { host: match[1], port: Number(match[2]) };
}

module.exports = {
  ADDRESS_ENV,
  WORKER_ID_ENV,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  DEFAULT_GRACE,
  MAX_MESSAGE_LENGTH,
  NAME_ENV,
  loadConfig,
  parseConfig,
  streamOptions,
};
