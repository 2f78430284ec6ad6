#!/usr/bin/env -S node --max-semi-space-size=2
'use strict';

// polyfn's Node.js runtime: `polyfn-node -c FILE` (call mode) or
// `polyfn-node --host H --port P --workerId W ...` (stream mode). See README.md.
//
// --max-semi-space-size=2 (MiB) keeps V8's young generation small: an idle
// worker holds about 10 MiB less than with the default (up to 16 MiB per
// semi-space, which a burst of invocations grows it to and which is not
// given back). Run `node [flags] polyfn-node.js` to choose other flags.

const { fatal, main } = require('../lib/main');

main(process.argv.slice(2)).then((status) => process.exit(status), fatal);
