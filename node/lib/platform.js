'use strict'
// The per-platform package's name, as napi-rs names them: this package's name and the platform
// (scalestore-linux-x64-gnu; scalestore-client-linux-x64-gnu for the client-only flavour).

/** The platform part alone: linux-x64-gnu, linux-x64-musl, darwin-arm64, ... */
function platformSuffix () {
  let libc = ''
  if (process.platform === 'linux') {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
    libc = report && report.header && report.header.glibcVersionRuntime ? '-gnu' : '-musl'
  }
  return `${process.platform}-${process.arch}${libc}`
}

function platformPackage () {
  return `${require('../package.json').name}-${platformSuffix()}`
}

module.exports = { platformPackage, platformSuffix }
