// Shared by the tests: server processes on loopback, free ports, polling.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export async function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

export function serverBinary () {
  if (process.env.SCALESTORE_SERVER_BIN) return process.env.SCALESTORE_SERVER_BIN
  const target = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'scalestore', 'target')
  for (const candidate of [path.join(target, 'debug', 'scalestore-server'), path.join(os.homedir(), '.cargo', 'bin', 'scalestore-server')]) {
    if (fs.existsSync(candidate)) return candidate
  }
  throw new Error('scalestore-server not found: build it (cargo build -p scalestore-server) or set SCALESTORE_SERVER_BIN')
}

/**
 * One scalestore-server that listens at one port and advertises another nobody listens on, as
 * a node behind NAT or Docker's port mapping; resolves { reachable, advertised, stop }.
 */
export async function startBehindNat () {
  const binary = serverBinary()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scalestore-node-nat-'))
  const reachable = `127.0.0.1:${await freePort()}`
  const advertised = `127.0.0.1:${await freePort()}`
  const log = fs.openSync(path.join(dir, 'node-1.log'), 'w')
  const proc = spawn(binary, ['--id', '1', '--listen', reachable, '--advertise', advertised, '--data-dir', path.join(dir, 'node-1'),
    '--initial-cluster', `1=${advertised}`, '--shards', '2'], { stdio: ['ignore', log, log] })
  const stop = async () => {
    await new Promise((resolve) => {
      if (proc.exitCode !== null) return resolve()
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000)
      proc.once('exit', () => { clearTimeout(timer); resolve() })
      proc.kill('SIGTERM')
    })
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { reachable, advertised, stop }
}

/** Three scalestore-server processes on loopback; resolves { endpoints, stop }. */
export async function startServers (shards = 4) {
  const binary = serverBinary()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scalestore-node-'))
  const ports = [await freePort(), await freePort(), await freePort()]
  const initial = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(',')
  const procs = ports.map((port, i) => {
    const log = fs.openSync(path.join(dir, `node-${i + 1}.log`), 'w')
    return spawn(binary, ['--id', String(i + 1), '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(dir, `node-${i + 1}`),
      '--initial-cluster', initial, '--shards', String(shards)], { stdio: ['ignore', log, log] })
  })
  const stop = async () => {
    await Promise.all(procs.map((p) => new Promise((resolve) => {
      if (p.exitCode !== null) return resolve()
      const timer = setTimeout(() => p.kill('SIGKILL'), 20_000)
      p.once('exit', () => { clearTimeout(timer); resolve() })
      p.kill('SIGTERM')
    })))
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { endpoints: ports.map((p) => `127.0.0.1:${p}`), stop }
}

export async function eventually (check, timeoutMs = 20_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const r = await check()
      if (r) return r
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw last ?? new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
