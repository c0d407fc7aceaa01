#!/usr/bin/env node
// Builds the native addon (bindings/node, a napi-rs crate) when the package is installed from
// the repository (`npm install /path/to/repo/node`, from any directory) or with `npm run build`.
//
// It runs cargo itself rather than `napi build`: napi-rs's CLI always passes `--target <host
// triple>`, which puts the build under target/<triple>/ and so compiles RocksDB a second time
// next to every other build of the workspace. Here the addon shares the workspace's one build
// plan: the dev profile (dependencies and the ScaleStore crates optimized) and one target dir
// (~/.cache/scalestore/target, or $CARGO_TARGET_DIR), so RocksDB is compiled once per machine
// and a reinstall with a built target dir takes seconds.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const here = path.resolve(__dirname, '..')
const repo = process.env.SCALESTORE_REPO ? path.resolve(process.env.SCALESTORE_REPO) : path.resolve(here, '..')
const manifest = path.join(repo, 'bindings', 'node', 'Cargo.toml')
const out = path.join(here, 'native')

if (process.env.SCALESTORE_SKIP_BUILD) {
  console.log('scalestore: SCALESTORE_SKIP_BUILD is set; not building the native addon')
  process.exit(0)
}
if (!fs.existsSync(manifest)) {
  console.error(`scalestore: cannot build the native addon: ${manifest} not found.
  Install the package from a clone of the repository, linked in place (npm 9.4 or newer does
  this by default; older npm: npm install --install-links=false /path/to/repo/node), or set
  SCALESTORE_REPO to the clone.`)
  process.exit(1)
}
const env = { ...process.env }
env.CARGO_TARGET_DIR = env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'scalestore', 'target')
env.CARGO_TERM_COLOR = env.CARGO_TERM_COLOR || 'never'
const cargo = env.CARGO || 'cargo'
console.log(`scalestore: building the native addon (target dir ${env.CARGO_TARGET_DIR}; a first build compiles RocksDB, 10-15 minutes)`)
const run = spawnSync(cargo, ['build', '--manifest-path', manifest, '-p', 'scalestore-node', '--lib'], { env, stdio: 'inherit' })
if (run.error) {
  console.error(`scalestore: cannot run ${cargo}: ${run.error.message} (install Rust with rustup, then reinstall)`)
  process.exit(1)
}
if (run.status !== 0) process.exit(run.status === null ? 1 : run.status)

const suffix = process.platform === 'darwin' ? 'dylib' : process.platform === 'win32' ? 'dll' : 'so'
const prefix = process.platform === 'win32' ? '' : 'lib'
const built = path.join(env.CARGO_TARGET_DIR, 'debug', `${prefix}scalestore_node.${suffix}`)
fs.mkdirSync(out, { recursive: true })
// Copied beside a new name and renamed, so a process that has the old addon loaded keeps it.
const staged = path.join(out, `scalestore.node.${process.pid}`)
fs.copyFileSync(built, staged)
fs.renameSync(staged, path.join(out, 'scalestore.node'))
console.log(`scalestore: native addon ready (${path.join(out, 'scalestore.node')})`)
