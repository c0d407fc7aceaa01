#!/usr/bin/env node
// Builds the native addon (bindings/node) with napi-rs's CLI when the package is installed from
// the repository (`npm install /path/to/repo/node`). It uses the workspace's one build plan:
// the dev profile (dependencies and the ScaleStore crates optimized) and the shared target dir
// (~/.cache/scalestore/target, or $CARGO_TARGET_DIR), so RocksDB is compiled once per machine.
// cargo rebuilds only what changed, so a reinstall with a built target dir takes seconds.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const here = path.resolve(__dirname, '..')
const manifest = path.resolve(here, '..', 'bindings', 'node', 'Cargo.toml')
const out = path.join(here, 'native')
if (process.env.SCALESTORE_SKIP_BUILD) {
  console.log('scalestore: SCALESTORE_SKIP_BUILD is set; not building the native addon')
  process.exit(0)
}
if (!fs.existsSync(manifest)) {
  console.error(`scalestore: cannot build the native addon: ${manifest} not found (install from a clone of the repository)`)
  process.exit(1)
}
const env = { ...process.env }
env.CARGO_TARGET_DIR = env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'scalestore', 'target')
env.CARGO_TERM_COLOR = env.CARGO_TERM_COLOR || 'never'
const cli = require.resolve('@napi-rs/cli/dist/cli.js', { paths: [here] })
const args = [
  cli, 'build',
  '--manifest-path', manifest,
  '--platform',
  '--output-dir', out,
  '--js', 'index.js',
  '--dts', 'index.d.ts',
  '--profile', 'dev',
]
console.log(`scalestore: building the native addon (target dir ${env.CARGO_TARGET_DIR}; the first build compiles RocksDB, 10-15 minutes)`)
const run = spawnSync(process.execPath, args, { cwd: here, env, stdio: 'inherit' })
process.exit(run.status === null ? 1 : run.status)
