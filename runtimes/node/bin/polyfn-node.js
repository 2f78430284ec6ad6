#!/usr/bin/env -S node --max-semi-space-size=2 --v8-pool-size=1
'use strict';

// polyfn's Node.js runtime: `polyfn-node -c FILE` (call mode) or
// `polyfn-node --host H --port P --workerId W ...` (stream mode). See README.md.
//
// --max-semi-space-size=2 (MiB) keeps V8's young generation small: an idle
// worker holds about 10 MiB less than with the default (up to 16 MiB per
// semi-space, which a burst of invocations grows it to and which is not
// given back). --v8-pool-size=1: one background thread for V8 (garbage
// collection, compilation) instead of four, about 1 MiB less, no measurable
// CPU cost. polyfn's host starts the script with the same flags
// (internal/runtimes.NodeFlags; keep them equal). Run `node [flags]
// polyfn-node.js` to choose other flags.

const { fatal, main } = require('../lib/main');

main(process.argv.slice(2)).then((status) => process.exit(status), fatal);
