'use strict'
// Loads the addon that scripts/build.js built into ../native. The package's install step
// builds it; npm 11 skips a dependency's install step unless it is allowed
// (`npm install --allow-scripts=scalestore ...`), so when the addon is missing the first
// require builds it here (seconds once the README's set-up has built the workspace).
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'native', 'scalestore.node')

if (!fs.existsSync(file)) {
  const { spawnSync } = require('node:child_process')
  const build = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'build.js')], {
    stdio: ['ignore', process.stderr, process.stderr],
  })
  if (build.status !== 0) {
    throw new Error(`scalestore: the native addon is not built and building it failed (exit ${build.status}); run \`npm run build\` in ${path.dirname(__dirname)}`)
  }
}

module.exports = require(file)
