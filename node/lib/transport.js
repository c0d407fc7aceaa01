'use strict'
// connect (server crate's transport.rs): a Client of a remote cluster over gRPC.

const addon = require('./native')
const args = require('./args')
const { native, invalid } = require('./error')
const { Client } = require('./client')

function pem (v, what) {
  if (v === undefined || v === null) return undefined
  let data
  if (typeof v === 'string') data = Buffer.from(v, 'utf8')
  else if (Buffer.isBuffer(v)) data = v
  else throw new TypeError(`tls.${what} must be PEM contents (a string or Buffer), not ${args.typeName(v)}`)
  // A path given where contents belong would otherwise fail only after the connect deadline.
  if (!data.includes('-----BEGIN')) {
    throw invalid(`tls.${what} is not PEM contents (no -----BEGIN line); read the file first, e.g. fs.readFileSync(path)`)
  }
  return data
}

/** A positive number of milliseconds, or undefined. */
function positive (v, what) {
  if (v === undefined) return undefined
  if (typeof v !== 'number') throw new TypeError(`${what} must be a number, not ${args.typeName(v)}`)
  if (!Number.isFinite(v) || v <= 0) throw invalid(`${what} must be a positive number of milliseconds, not ${v}`)
  return v
}

/**
 * Connects to a cluster: endpoints as an array or a comma-separated string (undefined:
 * $SCALESTORE_ENDPOINTS). Fetches the map at
 * once (UNAVAILABLE if no endpoint answers within connectTimeoutMs, default: timeoutMs);
 * timeoutMs (10 s) is the default for every call, attemptTimeoutMs (2 s) for each attempt;
 * `encoding` (e.g. 'utf8'): values and scanned keys come back as strings (default: Buffers);
 * `addressMap` ({ 'advertised:port': 'reachable:port' }) says where to reach nodes whose
 * advertised addresses this client cannot dial (NAT, Docker, Kubernetes port mapping);
 * backoffInitialMs (5) is the pause after a failed attempt, doubled up to backoffMaxMs (200).
 */
async function connect (endpoints, opts) {
  let list
  if (endpoints === undefined || endpoints === null) {
    endpoints = process.env.SCALESTORE_ENDPOINTS ?? ''
    if (!endpoints.trim()) throw invalid('no endpoints: pass them, or set SCALESTORE_ENDPOINTS (as the CLI reads it)')
  }
  if (typeof endpoints === 'string') list = endpoints.split(',')
  else if (Array.isArray(endpoints) && endpoints.every((e) => typeof e === 'string')) list = endpoints
  else throw new TypeError('endpoints must be a string or an array of strings like "127.0.0.1:7001"')
  list = list.map((e) => e.trim()).filter(Boolean)
  if (list.length === 0) throw invalid('no endpoint given')
  const o = args.options(opts)
  const encoding = args.encoding(o.encoding)
  const timeoutMs = args.timeout(o) ?? 10_000
  const connectTimeoutMs = positive(o.connectTimeoutMs, 'connectTimeoutMs')
  const attemptTimeoutMs = positive(o.attemptTimeoutMs, 'attemptTimeoutMs')
  let tls
  if (o.tls !== undefined && o.tls !== null) {
    const t = args.options(o.tls, 'tls')
    tls = { ca: pem(t.ca, 'ca'), cert: pem(t.cert, 'cert'), key: pem(t.key, 'key'), serverName: serverName(t.serverName) }
    if (!tls.ca) throw invalid('tls needs the cluster CA (tls.ca)')
  }
  const dial = {
    addressMap: addressMap(o.addressMap),
    backoffInitialMs: positive(o.backoffInitialMs, 'backoffInitialMs'),
    backoffMaxMs: positive(o.backoffMaxMs, 'backoffMaxMs')
  }
  return new Client(await native(() => addon.connect(list, timeoutMs, tls, connectTimeoutMs, attemptTimeoutMs, dial)), encoding)
}

function serverName (v) {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw new TypeError(`tls.serverName must be a string, not ${args.typeName(v)}`)
  return v
}

/**
 * `ADVERTISED=REACHABLE` entries from an object or a Map of advertised -> reachable addresses
 * (the addon checks them); undefined: $SCALESTORE_ADDRESS_MAP, as the CLI reads it.
 */
function addressMap (v) {
  if (v === undefined || v === null) return [process.env.SCALESTORE_ADDRESS_MAP ?? '']
  const pairs = v instanceof Map ? [...v.entries()] : (typeof v === 'object' && !Array.isArray(v) ? Object.entries(v) : null)
  if (pairs === null) throw new TypeError(`addressMap must be an object or a Map of advertised -> reachable addresses, not ${args.typeName(v)}`)
  return pairs.map(([advertised, reachable]) => {
    if (typeof advertised !== 'string' || typeof reachable !== 'string') throw new TypeError('addressMap addresses must be strings ("host:port")')
    if (advertised.includes('=') || advertised.includes(',') || reachable.includes(',')) {
      throw invalid(`addressMap: ${advertised} -> ${reachable} is not host:port -> host:port`)
    }
    return `${advertised}=${reachable}`
  })
}

module.exports = { connect }
