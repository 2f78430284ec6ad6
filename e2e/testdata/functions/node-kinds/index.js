// The end-to-end semantic table in Node.js.
'use strict';

exports.echo = async (event) => event;

exports.returns = async (event) => {
  switch (event && event.kind) {
    case 'none': return undefined;
    case 'bytes': return Buffer.from('\x00raw\xffbytes', 'latin1');
    case 'str': return 'hello';
    default: return { kind: 'dict', n: [1, 2, 3] };
  }
};

class ValueError extends Error {
  constructor(message) { super(message); this.name = 'ValueError'; }
}

exports.fail = async (event) => { throw new ValueError(`bad input: ${event.why}`); };

exports.respond = async (event, context) =>
  context.response({ status: 201, headers: { 'x-kind': 'node' }, body: { created: event.name } });

// The Baetyl callback style.
exports.ctx = (event, context, callback) => {
  const env = {};
  for (const k of ['GREETING', 'RUNTIME_VAR', 'POLYFN_SECRET', 'BAETYL_SERVICE_INSTANCE_NAME', 'FUNCTIONS_WORKER_DIRECTORY']) {
    if (k in process.env) env[k] = process.env[k];
  }
  const plain = {};
  for (const k of Object.keys(context)) {
    if (typeof context[k] !== 'function' && k !== 'logger' && k !== 'signal') plain[k] = context[k];
  }
  callback(null, { context: plain, env, cwd: process.cwd() });
};

exports.slow = async () => {
  await new Promise((resolve) => setTimeout(resolve, 300));
  return 'done';
};
