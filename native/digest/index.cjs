'use strict'
// The addon built by `node-gyp rebuild` at install (binding.gyp).
module.exports = require('./build/Release/digest.node')
