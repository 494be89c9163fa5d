'use strict'
// A Node.js client of a grenex node, with the npm Grenache packages (grenache-nodejs-link,
// grenache-nodejs-http), the `ws` package and Node's built-in crypto only — nothing of grenex.
//
//   node client.js CONFIG_JSON_FILE
//
// CONFIG: {"grape", "node", "genesis": path, "keys": {account: base64url 32-byte seed},
//          "tls_key": path, "tls_cert": path (PEM: any client identity; the API is not mutual),
//          "requests": [...]}.  A request is one of
//   {"sign": COMMAND, "compress"?: bool}  COMMAND (with "client") signed with that account's
//                                         key (SPEC §8), sent with action COMMAND.type
//   {"again": i}                          request i's exact payload again (a retry)
//   {"payload": {...}}                    a raw payload
//
// SPEC §8 by hand: the cluster id is the SHA-256 (hex) of the genesis file's bytes; it is
// compared with the node's `status` before anything is signed.  TEXT is the command's JSON
// (with a "nonce": microseconds since the epoch, increasing per account); SIG is the Ed25519
// signature (crypto.sign(null, ...)) of "grenex/1\n" + cluster id + "\n" + TEXT, base64url
// without padding; the private key is the seed behind the PKCS#8 DER prefix
// 302e020100300506032b657004220420.  TLS: the genesis voters' certificates are the only
// trust anchors, and a server must present the key the genesis gives its node (SPEC §8
// "Endpoints": checkServerIdentity compares the certificate's key, keyOf(cert.raw)).
//
// The script subscribes to grenex:<cluster>:events (the `ws` package over TLS: PeerSub dials
// only ws://) and prints {"subscribed": true}, then sends each request in turn to
// grenex:<cluster>:node:<NODE> and prints one line per reply: {"ok": true, "result": ...,
// "sent": payload} or {"ok": false, "error": "...", "sent": payload}.  Then it prints every
// published event whose seq is one of the replies' seqs, as {"event": {...}}, and exits.

const fs = require('fs')
const crypto = require('crypto')
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')
const WebSocket = require('ws')

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const genesisBytes = fs.readFileSync(config.genesis)
const genesis = JSON.parse(genesisBytes.toString('utf8'))
const clusterId = crypto.createHash('sha256').update(genesisBytes).digest('hex')
const cluster = genesis.cluster
const node = config.node

const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')
const keys = {}
for (const [account, seed] of Object.entries(config.keys)) {
  const der = Buffer.concat([PKCS8_ED25519, Buffer.from(seed, 'base64url')])
  keys[account] = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
}
function publicKeyOf (account) {
  return crypto.createPublicKey(keys[account]).export({ format: 'jwk' }).x
}

let lastNonce = 0
function sign (cmd) {
  const obj = { ...cmd }
  if (obj.type === 'register' && obj.key === undefined) obj.key = publicKeyOf(obj.client)
  lastNonce = Math.max(lastNonce + 1, Date.now() * 1000)
  obj.nonce = lastNonce
  const text = JSON.stringify(obj)
  const msg = Buffer.from('grenex/1\n' + clusterId + '\n' + text, 'utf8')
  const sig = crypto.sign(null, msg, keys[obj.client]).toString('base64url')
  return { cmd: text, sig }
}

// TLS: pin the genesis voters' certificates and check the node's key
const keyOf = (raw) => new crypto.X509Certificate(raw).publicKey.export({ format: 'jwk' }).x
const voterKeys = new Map(genesis.voters.map((v) => [v.id, v.key]))
const ca = Buffer.from(genesis.voters
  .map((v) => new crypto.X509Certificate(Buffer.from(v.cert, 'base64url')).toString())
  .join(''))
function checkKey (want) {
  return (host, cert) => (want.has(keyOf(cert.raw)) ? undefined : new Error('ERR_GRENEX_NODE_KEY'))
}
const tls = {
  key: fs.readFileSync(config.tls_key),
  cert: fs.readFileSync(config.tls_cert),
  ca,
  checkServerIdentity: checkKey(new Set([voterKeys.get(node)]))
}

const link = new Link({ grape: config.grape, requestTimeout: 5000 })
link.start()
const rpc = new PeerRPCClient(link, { secure: tls })
rpc.init()
let ws = null

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function finish (code) {
  if (ws) ws.terminate()
  rpc.stop()
  link.stop()
  setTimeout(() => process.exit(code), 20)
}

const events = []
const wanted = new Set()
let waiting = false

function flush () {
  for (const ev of events.splice(0)) {
    if (wanted.has(ev.seq)) out({ event: ev })
  }
}

function request (payload, compress, cb) {
  rpc.request(`grenex:${cluster}:node:${node}`, payload, { timeout: 10000, compress: !!compress }, cb)
}

const sent = []
function send (i) {
  if (i >= config.requests.length) {
    waiting = true
    flush()
    // every reply's events arrive on the stream right after its apply; 1 s is plenty
    setTimeout(() => { flush(); finish(0) }, 1000)
    return
  }
  const r = config.requests[i]
  let payload
  if (r.sign) payload = { action: r.sign.type, args: [sign(r.sign)] }
  else if (r.again !== undefined) payload = sent[r.again]
  else payload = r.payload
  sent[i] = payload
  request(payload, r.compress, (err, result) => {
    if (err) out({ ok: false, error: err.message, sent: payload })
    else {
      out({ ok: true, result, sent: payload })
      if (result && typeof result.seq === 'number') wanted.add(result.seq)
    }
    send(i + 1)
  })
}

function subscribe () {
  link.lookup(`grenex:${cluster}:events`, {}, (err, dests) => {
    if (err || !dests || !dests.length) {
      out({ error: `no events publisher: ${err && err.message}` })
      return finish(1)
    }
    ws = new WebSocket(`wss://${dests[0]}/ws`, {
      ca,
      checkServerIdentity: checkKey(new Set(voterKeys.values()))
    })
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) // one frame per log entry: {seq, time, events}
      for (const ev of frame.events) events.push(ev)
      if (waiting) flush()
    })
    ws.on('error', (e) => { out({ error: `events: ${e.message}` }); finish(1) })
    ws.on('open', () => {
      out({ subscribed: true })
      send(0)
    })
  })
}

// the node must be of the genesis we sign for
request({ action: 'status', args: [{}] }, false, (err, st) => {
  if (err || !st || st.cluster_id !== clusterId) {
    out({ error: `cluster id: ${err ? err.message : st && st.cluster_id} / ${clusterId}` })
    return finish(1)
  }
  subscribe()
})
setTimeout(() => { out({ error: 'timeout' }); finish(1) }, 30000)
