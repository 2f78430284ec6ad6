'use strict';

// Loading function handlers from their code directories.
//
// `handler: file.export` names a module relative to the function's codedir
// and an export of it. The module is the first of these that exists (for
// `index.handler`, codedir/index.js, index.mjs, index.cjs, index/index.js,
// ...); a dotted module (`lib.main.handler`) is also looked up as a path
// (codedir/lib/main.js). Everything is loaded with import(), so CommonJS and
// ES modules both work, by Node's own rules (.mjs, .cjs, the nearest
// package.json "type").
//
// Modules are cached by absolute path, as Node always does: two functions
// whose codedirs both hold an index.js get two modules, and functions that
// share a codedir share its modules.
//
// The export is found as a named export, or as a property of the default
// export (module.exports of a CommonJS module).

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const { pathToFileURL } = require('node:url');

const { Scope, endScope, runInScope } = require('./logs');

const EXTENSIONS = ['.js', '.mjs', '.cjs'];

/** A handler cannot be loaded; `cause` holds the module's own error when it threw while loading. */
class HandlerLoadError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'HandlerLoadError';
  }
}

/** Whether handler has the `file.export` shape. */
function validHandler(handler) {
  if (typeof handler !== 'string') return false;
  const dot = handler.lastIndexOf('.');
  return dot > 0 && dot < handler.length - 1;
}

function splitHandler(handler) {
  const dot = handler.lastIndexOf('.');
  return { modulePath: handler.slice(0, dot), exportName: handler.slice(dot + 1) };
}

function isFile(file) {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The file a module path names in codedir. */
function resolveModule(codedir, modulePath) {
  const bases = [modulePath];
  if (modulePath.includes('.')) bases.push(modulePath.split('.').join('/'));
  const tried = [];
  for (const base of bases) {
    const full = path.resolve(codedir, base);
    const candidates = [];
    if (EXTENSIONS.includes(path.extname(full))) candidates.push(full);
    for (const ext of EXTENSIONS) candidates.push(full + ext);
    for (const ext of EXTENSIONS) candidates.push(path.join(full, `index${ext}`));
    for (const candidate of candidates) {
      if (tried.includes(candidate)) continue;
      tried.push(candidate);
      if (isFile(candidate)) return candidate;
    }
  }
  throw new HandlerLoadError(`module '${modulePath}' not found: no ${tried.join(' or ')}`);
}

/**
 * Import function.handler from function.codedir (resolved against the working
 * directory). Output written while the module loads is tagged with the function.
 * @param {{name: string, handler: string, codedir: string}} fn
 * @returns {Promise<{name: string, handler: Function, spec: string, file: string}>}
 * @throws {HandlerLoadError}
 */
async function loadHandler(fn) {
  if (!validHandler(fn.handler)) {
    throw new HandlerLoadError(`expected 'file.export', got ${util.inspect(fn.handler)}`);
  }
  const codedir = path.resolve(fn.codedir || '.');
  let stat;
  try {
    stat = fs.statSync(codedir);
  } catch {
    stat = null;
  }
  if (!stat?.isDirectory()) throw new HandlerLoadError(`codedir '${codedir}' is not a directory`);
  const { modulePath, exportName } = splitHandler(fn.handler);
  const file = resolveModule(codedir, modulePath);

  const scope = new Scope(fn.name);
  let namespace;
  try {
    namespace = await runInScope(scope, () => import(pathToFileURL(file).href));
  } catch (err) {
    throw new HandlerLoadError(`cannot import module '${modulePath}' from '${codedir}': ${describe(err)}`, {
      cause: err,
    });
  } finally {
    endScope(scope);
  }

  let handler = namespace[exportName];
  const fallback = namespace.default;
  if (handler === undefined && fallback !== null && (typeof fallback === 'object' || typeof fallback === 'function')) {
    handler = fallback[exportName];
  }
  if (handler === undefined) {
    throw new HandlerLoadError(`module '${modulePath}' (${file}) has no export '${exportName}'`);
  }
  if (typeof handler !== 'function') {
    throw new HandlerLoadError(`'${fn.handler}' is ${describeType(handler)}, not a function`);
  }
  return { name: fn.name, handler, spec: fn.handler, file };
}

function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return util.inspect(err);
}

function describeType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

module.exports = { HandlerLoadError, loadHandler, resolveModule, validHandler };
