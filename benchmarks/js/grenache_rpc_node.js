'use strict'
// The Node.js side of benchmarks/grenache_rpc.py (grenache-nodejs-http 1.0.2 + link 1.0.2).
//
//   server GRAPE NAME PORT        echo service; prints "READY <port>" once announced
//   client GRAPE NAME SEQ_N CONC_N INFLIGHT
//                                 SEQ_N sequential requests, then CONC_N requests with INFLIGHT
//                                 in flight; prints one JSON line with the latencies (µs)
//
// Run with the repository root as working directory so require() finds node_modules.

const Link = require('grenache-nodejs-link')
const { PeerRPCServer, PeerRPCClient } = require('grenache-nodejs-http')

const [mode, grape, name, ...rest] = process.argv.slice(2)
const link = new Link({ grape })
link.start()
process.on('SIGTERM', () => process.exit(0))

const PAYLOAD = { action: 'ping', args: [{ market: 'BTC-USD', price: '27000.5', qty: '0.25', i: 0 }] }

if (mode === 'server') {
  const peer = new PeerRPCServer(link, { timeout: 300000 })
  peer.init()
  const service = peer.transport('server')
  service.listen(parseInt(rest[0], 10))
  service.on('request', (rid, key, payload, handler) => handler.reply(null, { ok: true, echo: payload }))
  let ready = false
  const announce = () => link.announce(name, service.port, {}, (err) => {
    if (!err && !ready) { ready = true; process.stdout.write(`READY ${service.port}\n`) }
  })
  announce()
  setInterval(announce, 1000)
} else if (mode === 'client') {
  const [seqN, concN, inflight] = rest.map((x) => parseInt(x, 10))
  const peer = new PeerRPCClient(link, {})
  peer.init()
  const opts = { timeout: 10000 }
  const call = () => new Promise((resolve, reject) => {
    peer.request(name, PAYLOAD, opts, (err, res) => err ? reject(err) : resolve(res))
  })
  const now = () => Number(process.hrtime.bigint() / 1000n)
  const main = async () => {
    for (let i = 0; i < 200; i++) await call() // warm-up: lookup cache, keep-alive sockets
    const seq = []
    let t0 = now()
    for (let i = 0; i < seqN; i++) {
      const s = now(); await call(); seq.push(now() - s)
    }
    const seqWallUs = now() - t0
    const conc = []
    let left = concN
    t0 = now()
    const worker = async () => {
      while (left > 0) {
        left--
        const s = now(); await call(); conc.push(now() - s)
      }
    }
    await Promise.all(Array.from({ length: inflight }, worker))
    const concWallUs = now() - t0
    // Exit only once the (large) line is flushed: a pipe takes 64 KiB at a time.
    process.stdout.write(JSON.stringify({ seq, seqWallUs, conc, concWallUs }) + '\n', () => process.exit(0))
  }
  main().catch((err) => { process.stderr.write(String(err) + '\n'); process.exit(1) })
}
