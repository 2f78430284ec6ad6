'use strict';

/** This runtime's version (package.json). */
module.exports = require('../package.json').version;
