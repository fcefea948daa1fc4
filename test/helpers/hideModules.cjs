// Preloaded with `--require` (NODE_OPTIONS): the modules named in TRESOR_TEST_HIDE_MODULES
// (comma-separated) fail to load with MODULE_NOT_FOUND, in the process and in its worker threads,
// as on a machine where `npm ci` could not build them. Used by the CLI's fallback tests.
'use strict'
const Module = require('node:module')
const hidden = new Set((process.env.TRESOR_TEST_HIDE_MODULES || '').split(',').filter(Boolean))
const resolve = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  if (hidden.has(request)) {
    const err = new Error(`Cannot find module '${request}' (hidden by test/helpers/hideModules.cjs)`)
    err.code = 'MODULE_NOT_FOUND'
    throw err
  }
  return resolve.call(this, request, ...rest)
}
