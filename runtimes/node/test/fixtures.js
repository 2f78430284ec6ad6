'use strict';

// Function code the tests serve, in both modes: the same semantic table.

const HANDLERS = String.raw`
const fs = require('node:fs');
const sibling = require('./sibling');

exports.describe = (event) => {
  if (Buffer.isBuffer(event)) return { type: 'buffer', hex: event.toString('hex') };
  const type = event === null ? 'null' : Array.isArray(event) ? 'array' : typeof event;
  return { type, value: event };
};

exports.returns = (event) => {
  switch (event.kind) {
    case 'undefined': return undefined;
    case 'null': return null;
    case 'buffer': return Buffer.from([0x00, 0xff, 0x72, 0x61, 0x77]);
    case 'uint8array': return new Uint8Array([1, 2, 3]);
    case 'string': return 'hello';
    case 'number': return 42;
    case 'object': return { a: [1, 2.5, null, true], b: '\u00e9' };
    case 'bigint': return { n: 10n };
    case 'cycle': { const o = { name: 'o' }; o.self = o; return o; }
    case 'function': return () => 1;
  }
  throw new Error('unknown kind ' + event.kind);
};

exports.showContext = (event, context) => ({
  keys: Object.keys(context),
  spread: { ...context },
  json: JSON.parse(JSON.stringify(context)),
  remaining: context.getRemainingTimeInMillis(),
  logger: ['debug', 'info', 'log', 'warn', 'error'].every((m) => typeof context.logger[m] === 'function'),
  signal: context.signal instanceof AbortSignal && !context.signal.aborted,
  response: typeof context.response === 'function',
});

class ValidationError extends Error {}

exports.fail = (event) => { throw new TypeError('bad input: ' + event.why); };
exports.asyncFail = async () => { await null; throw new ValidationError('missing'); };
exports.callbackFail = (event, context, callback) => { setImmediate(() => callback(new RangeError('too far'))); };
exports.throwString = () => { throw 'plain string'; };

exports.asyncEcho = async (event, context) => {
  await new Promise((resolve) => setImmediate(resolve));
  return { style: 'async', event, function: context.functionName };
};
exports.syncEcho = (event, context) => ({ style: 'sync', event, function: context.functionName });
exports.callbackEcho = (event, context, callback) => {
  setImmediate(() => callback(null, { style: 'callback', event, function: context.functionName }));
};
exports.callbackTwice = (event, context, callback) => {
  callback(null, 'first');
  callback(null, 'second');
};

exports.fromSibling = () => sibling.VALUE;

exports.chatty = async (event, context) => {
  const tag = event.tag;
  console.log('log', tag);
  console.info('info %s', tag);
  console.debug('debug', tag);
  console.warn('warn', tag);
  console.error('error', tag);
  process.stdout.write('stdout ' + tag + '\n');
  process.stderr.write('stderr ' + tag + '\n');
  context.logger.info('logger info %s', tag);
  context.logger.warn('logger warn', tag);
  await new Promise((resolve) => setTimeout(resolve, 1));
  console.log('after await', tag);
  process.stdout.write('partial ' + tag);
};

exports.created = (event, context) =>
  context.response({ status: 201, headers: { 'x-a': 'b', 'x-n': 5 }, body: { id: event.id } });
exports.rawResponse = (event, context) =>
  context.response({ status: 202, headers: { 'content-type': 'text/plain' }, body: Buffer.from('raw body') });
exports.badStatus = (event, context) => context.response({ status: 99 });

// Settles only once event.n invocations of event.group are inside it at the same time.
const groups = new Map();
exports.rendezvous = (event) => new Promise((resolve, reject) => {
  let group = groups.get(event.group);
  if (!group) {
    group = { arrived: 0, waiting: [] };
    groups.set(event.group, group);
  }
  group.arrived += 1;
  const timer = setTimeout(() => reject(new Error('only ' + group.arrived + ' of ' + event.n + ' arrived')), 10000);
  group.waiting.push(() => { clearTimeout(timer); resolve(group.arrived); });
  if (group.arrived === event.n) for (const release of group.waiting) release();
});

// Logs "started", then waits (polling) until the file event.release exists;
// notes an abort of context.signal, and goes on waiting.
exports.waitForRelease = async (event, context) => {
  context.signal.addEventListener('abort', () => console.log('abort ignored'));
  console.log('started');
  const deadline = Date.now() + 20000;
  while (!fs.existsSync(event.release)) {
    if (Date.now() > deadline) throw new Error('never released');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return 'released';
};

// Logs "started", then waits for context.signal.
exports.forever = (event, context) => new Promise((resolve, reject) => {
  console.log('started');
  const timer = setTimeout(resolve, 60000, 'too late');
  const cancelled = () => {
    clearTimeout(timer);
    console.log('cancelled');
    reject(context.signal.reason);
  };
  if (context.signal.aborted) cancelled();
  else context.signal.addEventListener('abort', cancelled);
});

exports.environment = () => ({ env: { ...process.env }, cwd: process.cwd() });

// Many log records at once (the stream's writer must wait for 'drain').
exports.flood = (event) => {
  for (let i = 0; i < event.n; i++) console.log('line ' + i);
  return event.n;
};

// Large messages both ways: the length of a binary event, or event.size bytes back.
exports.size = (event) => (Buffer.isBuffer(event) ? event.length : Buffer.alloc(event.size, 0x61));

// Errors nobody catches: logged, and the worker keeps serving.
exports.stray = () => {
  Promise.reject(new Error('stray rejection'));
  setTimeout(() => {
    throw new Error('thrown later');
  }, 0);
  return 'returned';
};
`;

const CODE = {
  'main/handlers.js': HANDLERS,
  'main/sibling.js': "exports.VALUE = 'from sibling';\n",
  'main/lib/util.js': "module.exports = { handler: async () => 'nested path' };\n",
  'one/index.js': "exports.handler = () => 'one';\n",
  'two/index.js': "exports.handler = () => 'two';\n",
  'esm/index.mjs': [
    "import { sep } from 'node:path';",
    "import { VALUE } from './helper.mjs';",
    'export const handler = async (event, context) => ({ esm: true, sep, helper: VALUE, fn: context.functionName });',
    '',
  ].join('\n'),
  'esm/helper.mjs': "export const VALUE = 'esm helper';\n",
  'esmpkg/package.json': '{"type": "module"}\n',
  'esmpkg/index.js': 'export async function handler() { return typeof require; }\n',
  'cjsobj/index.cjs': "module.exports = { handler: (event, context, callback) => callback(null, 'module.exports object') };\n",
  'esmdefault/index.mjs': "export default { handler: () => 'default export' };\n",
};

const FUNCTIONS = {
  describe: 'handlers.describe',
  returns: 'handlers.returns',
  context: 'handlers.showContext',
  fail: 'handlers.fail',
  'async-fail': 'handlers.asyncFail',
  'callback-fail': 'handlers.callbackFail',
  'throw-string': 'handlers.throwString',
  'async-echo': 'handlers.asyncEcho',
  'sync-echo': 'handlers.syncEcho',
  'callback-echo': 'handlers.callbackEcho',
  'callback-twice': 'handlers.callbackTwice',
  sibling: 'handlers.fromSibling',
  chatty: 'handlers.chatty',
  created: 'handlers.created',
  'raw-response': 'handlers.rawResponse',
  'bad-status': 'handlers.badStatus',
  rendezvous: 'handlers.rendezvous',
  wait: 'handlers.waitForRelease',
  forever: 'handlers.forever',
  environment: 'handlers.environment',
  nested: 'lib.util.handler',
  flood: 'handlers.flood',
  size: 'handlers.size',
  stray: 'handlers.stray',
};

// Functions with a codedir of their own: [name, codedir, handler].
const OTHERS = [
  ['one', 'one', 'index.handler'],
  ['two', 'two', 'index.handler'],
  ['esm', 'esm', 'index.handler'],
  ['esm-package', 'esmpkg', 'index.handler'],
  ['cjs-object', 'cjsobj', 'index.handler'],
  ['esm-default', 'esmdefault', 'index.handler'],
];

// Handlers that cannot be loaded: [files, handler, error type, text in the message].
const BROKEN = [
  [{ 'bad.js': "require('does-not-exist-polyfn-test');\n" }, 'bad.handler', 'Error', 'does-not-exist-polyfn-test'],
  [{ 'bad.js': "throw new RangeError('config missing');\n" }, 'bad.handler', 'RangeError', 'config missing'],
  [{ 'bad.js': 'exports.handler = (;\n' }, 'bad.handler', 'SyntaxError', 'SyntaxError'],
  [{ 'bad.mjs': "import 'does-not-exist-polyfn-test';\n" }, 'bad.handler', 'Error', 'does-not-exist-polyfn-test'],
  [{ 'bad.js': 'exports.other = 1;\n' }, 'bad.handler', 'HandlerLoadError', "has no export 'handler'"],
  [{ 'bad.js': 'exports.handler = 1;\n' }, 'bad.handler', 'HandlerLoadError', 'is a number, not a function'],
  [{}, 'missing.handler', 'HandlerLoadError', "module 'missing' not found"],
];

module.exports = { BROKEN, CODE, FUNCTIONS, OTHERS };
