'use strict'
// Node.js side of grenex.grenache's TLS interop tests (SPEC §8 "Endpoints", the Node recipe).
//
//   request GRAPE NAME PAYLOAD_JSON   grenache-nodejs-http PeerRPCClient with
//                                     secure: {ca, cert, key, checkServerIdentity}; prints one
//                                     JSON line {ok, result} or {ok:false, error}
//   sub GRAPE TOPIC COUNT             looks TOPIC up and reads COUNT messages over wss:// with
//                                     the `ws` package and the same options; prints one JSON
//                                     line {ok, messages} or {ok:false, error}
//
// Environment: TLS_CA (PEM file of the pinned certificates), TLS_CERT / TLS_KEY (this
// client's certificate and PKCS#8 key, PEM), TLS_WANT_KEY (the base64url Ed25519 key the
// server's certificate must carry).

const fs = require('fs')
const crypto = require('crypto')
const Link = require('grenache-nodejs-link')
const GrHttp = require('grenache-nodejs-http')
const WebSocket = require('ws')

const [mode, grape, name, arg] = process.argv.slice(2)

const keyOf = (raw) => new crypto.X509Certificate(raw).publicKey.export({ format: 'jwk' }).x
const want = process.env.TLS_WANT_KEY
const secure = {
  ca: fs.readFileSync(process.env.TLS_CA),
  cert: fs.readFileSync(process.env.TLS_CERT),
  key: fs.readFileSync(process.env.TLS_KEY),
  checkServerIdentity: (host, cert) =>
    keyOf(cert.raw) === want ? undefined : new Error('ERR_GRENEX_NODE_KEY')
}

const link = new Link({ grape, requestTimeout: 5000 })
link.start()

function done (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
  link.stop()
  setTimeout(() => process.exit(0), 10)
}

setTimeout(() => done({ ok: false, error: 'ERR_TEST_TIMEOUT' }), 15000)

if (mode === 'request') {
  const peer = new GrHttp.PeerRPCClient(link, { secure })
  peer.init()
  peer.request(name, JSON.parse(arg), { timeout: 5000 }, (err, result) => {
    peer.stop()
    if (err) done({ ok: false, error: err.message })
    else done({ ok: true, result: result === undefined ? null : result })
  })
} else if (mode === 'sub') {
  const count = parseInt(arg, 10)
  link.lookup(name, {}, (err, peers) => {
    if (err) return done({ ok: false, error: err.message })
    const ws = new WebSocket(`wss://${peers[0]}/ws`, secure)
    const messages = []
    ws.on('message', (msg) => {
      messages.push(msg.toString())
      if (messages.length >= count) {
        ws.close()
        done({ ok: true, messages })
      }
    })
    ws.on('open', () => process.stderr.write('OPEN\n'))
    ws.on('error', (e) => done({ ok: false, error: e.message }))
  })
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
