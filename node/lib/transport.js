'use strict'
// connect (server crate's transport.rs): a Client of a remote cluster over gRPC.

const addon = require('./native')
const args = require('./args')
const { native, invalid } = require('./error')
const { Client } = require('./client')

function pem (v, what) {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string') return Buffer.from(v, 'utf8')
  if (Buffer.isBuffer(v)) return v
  throw new TypeError(`tls.${what} must be PEM contents (a string or Buffer), not ${args.typeName(v)}`)
}

/**
 * Connects to a cluster: endpoints as an array or a comma-separated string. Fetches the map at
 * once (UNAVAILABLE if no endpoint answers); timeoutMs is the default for every call.
 */
async function connect (endpoints, opts) {
  let list
  if (typeof endpoints === 'string') list = endpoints.split(',')
  else if (Array.isArray(endpoints) && endpoints.every((e) => typeof e === 'string')) list = endpoints
  else throw new TypeError('endpoints must be a string or an array of strings like "127.0.0.1:7001"')
  list = list.map((e) => e.trim()).filter(Boolean)
  if (list.length === 0) throw invalid('no endpoint given')
  const o = args.options(opts)
  const timeoutMs = args.timeout(o) ?? 10_000
  let tls
  if (o.tls !== undefined && o.tls !== null) {
    const t = args.options(o.tls, 'tls')
    tls = { ca: pem(t.ca, 'ca'), cert: pem(t.cert, 'cert'), key: pem(t.key, 'key') }
    if (!tls.ca) throw invalid('tls needs the cluster CA (tls.ca)')
  }
  return new Client(await native(() => addon.connect(list, timeoutMs, tls)))
}

module.exports = { connect }
