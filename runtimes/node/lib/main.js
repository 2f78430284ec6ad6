'use strict';

// The command line: call mode or stream mode (see ./args.js).

const util = require('node:util');
const grpc = require('@grpc/grpc-js');

const { USAGE, UsageError, parseArgs } = require('./args');
const { ConfigError, WORKER_ID_ENV, streamOptions } = require('./config');
const logs = require('./logs');
const VERSION = require('./version');

const EXIT_USAGE = 2;

/**
 * Run the runtime with argv (without node and the script); resolve with the
 * process's exit status.
 */
async function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${USAGE}\npolyfn-node: error: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }

  logs.install();
  // grpc-js's own messages are the runtime's.
  grpc.setLogger({
    error: (...parts) => logs.log.error(`grpc: ${util.format(...parts)}`),
    info: (...parts) => logs.log.info(`grpc: ${util.format(...parts)}`),
    debug: (...parts) => logs.log.debug(`grpc: ${util.format(...parts)}`),
  });
  if (args.unknown.length) logs.log.warn(`ignoring unknown arguments: ${args.unknown.join(' ')}`);

  let options;
  try {
    options = streamOptions(args, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    logs.log.error(err.message);
    return EXIT_USAGE;
  }
  // The functions, and what they start, need not see the worker id.
  delete process.env[WORKER_ID_ENV];
  try {
    if (options) return await require('./stream').run(options);
    if (args.standby) return await standby(args.config);
    return await require('./call').run(args.config);
  } finally {
    logs.flushAll();
  }
}

/**
 * Call mode as a standby worker (see ./standby.js): load, wait for the
 * host's claim, then serve as a worker started for the function.
 */
async function standby(configPath) {
  const sb = require('./standby');
  await sb.warm();
  let env;
  try {
    env = sb.claim();
  } catch (err) {
    logs.log.error(`standby: ${err.message}`);
    return EXIT_USAGE;
  }
  if (env === null) return 0;
  sb.apply(env);
  return require('./call').run(configPath, () => sb.serving());
}

/**
 * Report an error main() did not handle (a bug of the runtime) as one of the
 * runtime's own error records on stderr, and exit with status 1.
 */
function fatal(err) {
  logs.stderrSink.emit('error', `polyfn-node: ${err?.stack ?? err}`, { source: 'runtime' });
  process.exit(1);
}

module.exports = { EXIT_USAGE, fatal, main };
