'use strict';

// No-op: the benchmark measures the host and the runtime around it.
exports.noop = async () => undefined;

// Returns the event: raw bytes (the harness sends non-JSON) come back as they are.
exports.echo = async (event) => event;
