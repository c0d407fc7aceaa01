'use strict'
// ScaleStore for Node.js. See index.d.ts for the API and README.md at the repository's root.
const { Cluster } = require('./lib/cluster')
const { Client } = require('./lib/client')
const { connect } = require('./lib/transport')
const { checkLinearizable } = require('./lib/checker')
const { runSuite, NEMESES } = require('./lib/suite')
const { History } = require('./lib/history')
const { LoadRun } = require('./lib/load')
const { ScaleStoreError } = require('./lib/error')

module.exports = { Cluster, Client, connect, checkLinearizable, runSuite, NEMESES, History, LoadRun, ScaleStoreError }
