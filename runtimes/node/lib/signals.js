'use strict';

const { flushAll, log } = require('./logs');

const STOP_SIGNALS = Object.freeze(['SIGTERM', 'SIGINT']);

/**
 * Call stop() on the first SIGTERM or SIGINT. A second one exits the
 * process at once with status 1, without waiting for invocations in flight.
 */
function onStopSignals(stop) {
  let received = false;
  const handler = (name) => {
    if (received) {
      log.warn(`received ${name} again: exiting without waiting for invocations in flight`);
      flushAll();
      process.exit(1);
    }
    received = true;
    log.info(`received ${name}: stopping`);
    stop(name);
  };
  for (const name of STOP_SIGNALS) process.on(name, handler);
}

module.exports = { STOP_SIGNALS, onStopSignals };
