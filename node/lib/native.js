'use strict'
// Loads the native addon, from the first of:
// 1. ../native/scalestore.node, built by scripts/build.js when the package is installed from
//    the repository;
// 2. the prebuilt addon's per-platform package (scalestore-linux-x64-gnu, ...), an optional
//    dependency of the package scripts/package.sh builds, so installing it needs no compiler;
// 3. a build here: npm 11 skips a dependency's install step unless it is allowed
//    (`npm install --allow-scripts=scalestore ...`), so when the addon is missing the first
//    require builds it (seconds once the README's set-up has built the workspace).
const fs = require('node:fs')
const path = require('node:path')
const { platformPackage } = require('./platform')

const file = path.join(__dirname, '..', 'native', 'scalestore.node')

function load () {
  if (fs.existsSync(file)) return require(file)
  try {
    return require(platformPackage())
  } catch (e) {
    if (e.code !== 'MODULE_NOT_FOUND') throw e
  }
  const { spawnSync } = require('node:child_process')
  const build = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'build.js')], {
    stdio: ['ignore', process.stderr, process.stderr]
  })
  if (build.status !== 0) {
    throw new Error(`scalestore: no prebuilt addon for this platform (${platformPackage()}) and building it failed (exit ${build.status}); run \`npm run build\` in ${path.dirname(__dirname)}`)
  }
  return require(file)
}

module.exports = load()
