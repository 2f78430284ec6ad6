'use strict';

// The command line.
//
//   polyfn-node [-c FILE]                                   call mode
//   polyfn-node --host H --port P --workerId W --requestId R [--grpcMaxMessageLength N]
//   polyfn-node --functions-uri http://H:P/ --functions-worker-id W
//               --functions-request-id R [--functions-grpc-max-message-length N]
//                                                           stream mode (either spelling)
//
// In stream mode the worker id may come from POLYFN_WORKER_ID instead, as
// polyfn's host passes it (see ./config.js).
//
// Options take their value as the next argument or after "=". Arguments
// that are not options of ours are collected in `unknown` (hosts pass extra
// arguments of their own); they are ignored with a warning.

const { DEFAULT_CONFIG_PATH } = require('./config');

/** A malformed command line (exit status 2). */
class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UsageError';
  }
}

const OPTIONS = new Map([
  ['-c', { key: 'config' }],
  ['--config', { key: 'config' }],
  ['--host', { key: 'host' }],
  ['--port', { key: 'port', integer: true }],
  ['--workerId', { key: 'workerId' }],
  ['--requestId', { key: 'requestId' }],
  ['--grpcMaxMessageLength', { key: 'maxMessageLength', integer: true }],
  ['--functions-uri', { key: 'functionsUri' }],
  ['--functions-worker-id', { key: 'functionsWorkerId' }],
  ['--functions-request-id', { key: 'functionsRequestId' }],
  ['--functions-grpc-max-message-length', { key: 'functionsMaxMessageLength', integer: true }],
]);

const FLAGS = new Map([
  ['-h', 'help'],
  ['--help', 'help'],
  ['--version', 'version'],
  ['--standby', 'standby'],
]);

const USAGE = `usage: polyfn-node [-c FILE]
       polyfn-node --host HOST --port PORT --workerId ID --requestId ID [--grpcMaxMessageLength N]
       polyfn-node --functions-uri http://HOST:PORT/ --functions-worker-id ID --functions-request-id ID
                   [--functions-grpc-max-message-length N]

polyfn's Node.js runtime: serves Node.js functions to the polyfn host.

call mode (baetyl.Function/Call server):
  -c, --config FILE   the worker's config file (default: ${DEFAULT_CONFIG_PATH});
                      listens on BAETYL_SERVICE_INSTANCE_ADDRESS (127.0.0.1:PORT or unix:/path)
  --standby           wait for the environment on standard input before reading
                      the config (polyfn's host starts standby workers so)

stream mode (Azure Functions language worker; the host passes these, either spelling):
  --host HOST --port PORT, or --functions-uri http://HOST:PORT/
  --workerId ID, --functions-worker-id ID
                      (or the environment variable POLYFN_WORKER_ID)
  --requestId ID, --functions-request-id ID
  --grpcMaxMessageLength N, --functions-grpc-max-message-length N

  -h, --help          show this help
  --version           print the version
`;

/**
 * Parse argv (without node and the script).
 * @returns {{config: string, unknown: string[], help: boolean, version: boolean, [key: string]: any}}
 * @throws {UsageError}
 */
function parseArgs(argv) {
  const args = { config: DEFAULT_CONFIG_PATH, unknown: /** @type {string[]} */ ([]), help: false, version: false, standby: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const flag = FLAGS.get(arg);
    if (flag) {
      args[flag] = true;
      continue;
    }
    let name = arg;
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      name = arg.slice(0, eq);
      value = arg.slice(eq + 1);
    } else if (arg.startsWith('-c') && arg.length > 2 && !arg.startsWith('--')) {
      name = '-c';
      value = arg.slice(2);
    }
    const option = OPTIONS.get(name);
    if (!option) {
      args.unknown.push(arg);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`argument ${name}: expected a value`);
      value = argv[++i];
    }
    if (option.integer) {
      if (!/^[+-]?\d+$/.test(value.trim())) throw new UsageError(`argument ${name}: invalid integer value: '${value}'`);
      args[option.key] = Number(value);
    } else {
      args[option.key] = value;
    }
  }
  return args;
}

module.exports = { USAGE, UsageError, parseArgs };
