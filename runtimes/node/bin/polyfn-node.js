#!/usr/bin/env node
'use strict';

// polyfn's Node.js runtime: `polyfn-node -c FILE` (call mode) or
// `polyfn-node --host H --port P --workerId W ...` (stream mode). See README.md.

const { fatal, main } = require('../lib/main');

main(process.argv.slice(2)).then((status) => process.exit(status), fatal);
