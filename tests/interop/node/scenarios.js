// Interop scenarios for rnats-streaming-server, run with the official node-nats-streaming
// client. Usage: node scenarios.js <scenario> <nats-url> [cluster-id]
// Prints "OK <scenario>" and exits 0 on success; prints the failure and exits 1 otherwise.
// Every wait is bounded (WAIT_MS per step, SCENARIO_MS for the whole scenario).
'use strict'

const stan = require('node-nats-streaming')

const scenario = process.argv[2]
const url = process.argv[3]
const clusterID = process.argv[4] || 'test-cluster'
const WAIT_MS = 5000
const SCENARIO_MS = 30000

const conns = []

function fail (msg) {
  console.log('FAIL ' + scenario + ': ' + msg)
  process.exit(1)
}

function assert (cond, msg) {
  if (!cond) fail(msg)
}

function eq (a, b, msg) {
  const ja = JSON.stringify(a)
  const jb = JSON.stringify(b)
  if (ja !== jb) fail(msg + ': expected ' + jb + ', got ' + ja)
}

function withTimeout (p, what, ms) {
  let t
  return Promise.race([
    p,
    new Promise((resolve, reject) => {
      t = setTimeout(() => reject(new Error('timed out waiting for ' + what)), ms || WAIT_MS)
    })
  ]).finally(() => clearTimeout(t))
}

function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function connect (clientID, opts) {
  return withTimeout(new Promise((resolve, reject) => {
    const sc = stan.connect(clusterID, clientID, Object.assign({ url }, opts || {}))
    sc.once('connect', () => { conns.push(sc); resolve(sc) })
    sc.once('error', (e) => reject(e instanceof Error ? e : new Error(String(e))))
  }), 'connect ' + clientID)
}

function close (sc) {
  return withTimeout(new Promise((resolve) => {
    sc.once('close', resolve)
    sc.close()
  }), 'close')
}

function publish (sc, subject, data) {
  return withTimeout(new Promise((resolve, reject) => {
    sc.publish(subject, data, (err, guid) => (err ? reject(new Error(String(err))) : resolve(guid)))
  }), 'puback on ' + subject)
}

// Subscribes and collects messages. Returns {sub, msgs, next(n), ready}.
function subscribe (sc, subject, qGroup, opts) {
  const sub = qGroup ? sc.subscribe(subject, qGroup, opts) : sc.subscribe(subject, opts)
  const msgs = []
  const waiters = []
  const errors = []
  sub.on('message', (m) => {
    msgs.push(m)
    for (const w of waiters.slice()) {
      if (msgs.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(msgs.slice())
      }
    }
  })
  sub.on('error', (e) => {
    errors.push(e)
    for (const w of waiters.splice(0)) w.reject(e)
  })
  const ready = withTimeout(new Promise((resolve, reject) => {
    sub.once('ready', resolve)
    sub.once('error', reject)
  }), 'subscription ready on ' + subject)
  return {
    sub,
    msgs,
    errors,
    ready,
    next (n, ms) {
      if (msgs.length >= n) return Promise.resolve(msgs.slice())
      return withTimeout(new Promise((resolve, reject) => waiters.push({ n, resolve, reject })),
        n + ' messages on ' + subject + ' (have ' + msgs.length + ')', ms)
    }
  }
}

function subError (sc, subject, qGroup, opts) {
  const s = subscribe(sc, subject, qGroup, opts)
  return withTimeout(s.ready.then(() => null, (e) => String(e.message || e)), 'subscription error')
}

function seqs (msgs) {
  return msgs.map((m) => m.getSequence())
}

function datas (msgs) {
  return msgs.map((m) => String(m.getData()))
}

function unsubscribe (s) {
  return withTimeout(new Promise((resolve) => {
    s.sub.once('unsubscribed', resolve)
    s.sub.unsubscribe()
  }), 'unsubscribe')
}

function closeSub (s) {
  return withTimeout(new Promise((resolve) => {
    s.sub.once('closed', resolve)
    s.sub.close()
  }), 'subscription close')
}

const scenarios = {
  // Publish with acks, then replay everything: order, sequences, timestamps.
  async publish_acks () {
    const sc = await connect('pub-acks')
    const guids = []
    for (let i = 1; i <= 10; i++) guids.push(await publish(sc, 'pa', 'm' + i))
    eq(new Set(guids).size, 10, 'distinct guids')
    const s = subscribe(sc, 'pa', null, sc.subscriptionOptions().setDeliverAllAvailable())
    await s.ready
    const msgs = await s.next(10)
    eq(seqs(msgs), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'sequences')
    eq(datas(msgs), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9', 'm10'], 'payloads')
    for (let i = 1; i < msgs.length; i++) {
      assert(msgs[i].getTimestampRaw() >= msgs[i - 1].getTimestampRaw(), 'timestamps increase')
      assert(!msgs[i].isRedelivered(), 'not redelivered')
    }
    const age = Date.now() - msgs[0].getTimestamp().getTime()
    assert(age >= -1000 && age < 60000, 'timestamp is wall clock ns (age ' + age + ' ms)')
    // Bad channel names and wildcards are refused with the documented errors. (A publish to
    // `foo..bar` never reaches the server: core NATS drops the invalid subject, as the
    // reference does; the Rust tests send that channel name in a well-formed NATS subject.)
    let err = null
    try { await publish(sc, 'foo.*', 'x') } catch (e) { err = e.message }
    eq(err, 'stan: invalid publish request', 'publish to foo.*')
    eq(await subError(sc, 'foo..bar'), 'stan: invalid subject', 'subscribe to foo..bar')
    eq(await subError(sc, 'foo.>'), 'stan: invalid subject', 'subscribe to foo.>')
    await close(sc)
  },

  // Every start position.
  async start_positions () {
    const sc = await connect('start-pos')
    for (let i = 1; i <= 3; i++) await publish(sc, 'sp', 'a' + i)
    await sleep(300)
    const mark = new Date()
    await sleep(50)
    for (let i = 4; i <= 5; i++) await publish(sc, 'sp', 'a' + i)

    const newOnly = subscribe(sc, 'sp', null, sc.subscriptionOptions())
    const last = subscribe(sc, 'sp', null, sc.subscriptionOptions().setStartWithLastReceived())
    const bySeq = subscribe(sc, 'sp', null, sc.subscriptionOptions().setStartAtSequence(3))
    const all = subscribe(sc, 'sp', null, sc.subscriptionOptions().setDeliverAllAvailable())
    const byTime = subscribe(sc, 'sp', null, sc.subscriptionOptions().setStartTime(mark))
    const byDelta = subscribe(sc, 'sp', null, sc.subscriptionOptions().setStartAtTimeDelta(3600 * 1000))
    for (const s of [newOnly, last, bySeq, all, byTime, byDelta]) await s.ready

    eq(seqs(await last.next(1)), [5], 'last received')
    eq(seqs(await bySeq.next(3)), [3, 4, 5], 'sequence start')
    eq(seqs(await all.next(5)), [1, 2, 3, 4, 5], 'deliver all')
    eq(seqs(await byTime.next(2)), [4, 5], 'start time')
    eq(seqs(await byDelta.next(5)), [1, 2, 3, 4, 5], 'time delta')
    await publish(sc, 'sp', 'a6')
    eq(seqs(await newOnly.next(1)), [6], 'new only')
    eq(seqs(await last.next(2)), [5, 6], 'last received then new')
    await sleep(100)
    eq(newOnly.msgs.length, 1, 'new only got nothing else')
    await close(sc)
  },

  // A durable subscription resumes where it left after the client closes and reconnects,
  // and is removed by unsubscribe.
  async durable () {
    let sc = await connect('dur-client')
    const pub = await connect('dur-pub')
    const opts = () => sc.subscriptionOptions().setDurableName('dur').setDeliverAllAvailable()
    let s = subscribe(sc, 'dc', null, opts())
    await s.ready
    for (let i = 1; i <= 3; i++) await publish(pub, 'dc', 'd' + i)
    eq(seqs(await s.next(3)), [1, 2, 3], 'first run')
    await sleep(100) // let the auto-acks reach the server
    await close(sc)
    for (let i = 4; i <= 6; i++) await publish(pub, 'dc', 'd' + i)

    sc = await connect('dur-client')
    s = subscribe(sc, 'dc', null, opts())
    await s.ready
    eq(seqs(await s.next(3)), [4, 5, 6], 'resumed after reconnect')
    await sleep(200)
    eq(s.msgs.length, 3, 'nothing delivered twice')
    // A second registration of the same durable while it is active is refused.
    eq(await subError(sc, 'dc', null, opts()), 'stan: duplicate durable registration', 'duplicate durable')
    // Close keeps the durable.
    await closeSub(s)
    await publish(pub, 'dc', 'd7')
    s = subscribe(sc, 'dc', null, opts())
    await s.ready
    eq(seqs(await s.next(1)), [7], 'resumed after subscription close')
    // Unsubscribe removes it: a new durable with that name starts from its start position.
    await unsubscribe(s)
    s = subscribe(sc, 'dc', null, opts())
    await s.ready
    eq(seqs(await s.next(7)), [1, 2, 3, 4, 5, 6, 7], 'new durable after unsubscribe')
    await close(sc)
    await close(pub)
  },

  // A queue group: every message to exactly one member; a durable queue group survives
  // all its members leaving.
  async queue () {
    const a = await connect('q-a')
    const b = await connect('q-b')
    const pub = await connect('q-pub')
    const qa = subscribe(a, 'qc', 'workers', a.subscriptionOptions())
    const qb = subscribe(b, 'qc', 'workers', b.subscriptionOptions())
    await qa.ready
    await qb.ready
    for (let i = 1; i <= 20; i++) await publish(pub, 'qc', 'q' + i)
    const deadline = Date.now() + WAIT_MS
    while (qa.msgs.length + qb.msgs.length < 20 && Date.now() < deadline) await sleep(20)
    const got = seqs(qa.msgs).concat(seqs(qb.msgs)).sort((x, y) => x - y)
    eq(got, Array.from({ length: 20 }, (_, i) => i + 1), 'each message once')
    assert(qa.msgs.length > 0 && qb.msgs.length > 0, 'both members served (' + qa.msgs.length + '/' + qb.msgs.length + ')')

    // Durable queue group.
    const dopts = (c) => c.subscriptionOptions().setDurableName('dq').setDeliverAllAvailable()
    let da = subscribe(a, 'dqc', 'dworkers', dopts(a))
    await da.ready
    await publish(pub, 'dqc', 'x1')
    eq(seqs(await da.next(1)), [1], 'durable queue first message')
    await sleep(100)
    await closeSub(da)
    await publish(pub, 'dqc', 'x2')
    await publish(pub, 'dqc', 'x3')
    da = subscribe(b, 'dqc', 'dworkers', dopts(b))
    await da.ready
    eq(seqs(await da.next(2)), [2, 3], 'durable queue group resumed by a new member')
    await close(a)
    await close(b)
    await close(pub)
  },

  // Manual acks: an unacked message is redelivered after the ack wait with redelivered=true.
  async redelivery () {
    const sc = await connect('redeliver')
    const opts = sc.subscriptionOptions().setManualAckMode(true).setAckWait(1000).setDeliverAllAvailable()
    const s = subscribe(sc, 'rd', null, opts)
    await s.ready
    await publish(sc, 'rd', 'r1')
    const t0 = Date.now()
    const first = await s.next(1)
    eq(seqs(first), [1], 'first delivery')
    assert(!first[0].isRedelivered(), 'first delivery is not flagged')
    const both = await s.next(2, 4000)
    const dt = Date.now() - t0
    eq(seqs(both), [1, 1], 'redelivered')
    assert(both[1].isRedelivered(), 'redelivered flag set')
    assert(dt >= 900 && dt < 3500, 'redelivered after about the ack wait (' + dt + ' ms)')
    both[1].ack()
    await publish(sc, 'rd', 'r2')
    const three = await s.next(3)
    eq(seqs(three), [1, 1, 2], 'next message')
    assert(!three[2].isRedelivered(), 'new message not flagged')
    three[2].ack()
    await sleep(1600)
    eq(s.msgs.length, 3, 'acked messages are not redelivered')
    await close(sc)
  },

  // Max in flight with manual acks: the subscription stalls until it acks.
  async max_inflight () {
    const sc = await connect('mif')
    for (let i = 1; i <= 5; i++) await publish(sc, 'mf', 'f' + i)
    const opts = sc.subscriptionOptions().setManualAckMode(true).setMaxInFlight(2).setDeliverAllAvailable()
    const s = subscribe(sc, 'mf', null, opts)
    await s.ready
    const two = await s.next(2)
    eq(seqs(two), [1, 2], 'first two')
    await sleep(300)
    eq(s.msgs.length, 2, 'stalled at max in flight')
    two[0].ack()
    eq(seqs(await s.next(3)), [1, 2, 3], 'one more after an ack')
    s.msgs[1].ack()
    s.msgs[2].ack()
    const five = await s.next(5)
    eq(seqs(five), [1, 2, 3, 4, 5], 'the rest after acks')
    await close(sc)
  },

  // Duplicate client ID: refused while the first connection answers heartbeats.
  async duplicate_client () {
    const sc = await connect('dup-id')
    let err = null
    try { await connect('dup-id') } catch (e) { err = String(e.message || e) }
    eq(err, 'stan: clientID already registered', 'duplicate client ID')
    await publish(sc, 'dupc', 'still ok')
    await close(sc)
    const again = await connect('dup-id')
    await close(again)
  },

  // File store restart, phase 1: messages and a durable position.
  async restart_phase1 () {
    const sc = await connect('restart-client')
    const pub = await connect('restart-pub')
    const s = subscribe(sc, 'rs', null, sc.subscriptionOptions().setDurableName('keep').setDeliverAllAvailable())
    await s.ready
    for (let i = 1; i <= 3; i++) await publish(pub, 'rs', 'p' + i)
    eq(seqs(await s.next(3)), [1, 2, 3], 'before restart')
    await sleep(200)
    await close(sc)
    for (let i = 4; i <= 5; i++) await publish(pub, 'rs', 'p' + i)
    await close(pub)
  },

  // Phase 2, after the server restarted on the same directory.
  async restart_phase2 () {
    const sc = await connect('restart-client')
    const s = subscribe(sc, 'rs', null, sc.subscriptionOptions().setDurableName('keep').setDeliverAllAvailable())
    await s.ready
    const resumed = await s.next(2)
    eq(seqs(resumed), [4, 5], 'durable resumed at its position')
    eq(datas(resumed), ['p4', 'p5'], 'payloads kept')
    const all = subscribe(sc, 'rs', null, sc.subscriptionOptions().setDeliverAllAvailable())
    await all.ready
    eq(datas(await all.next(5)), ['p1', 'p2', 'p3', 'p4', 'p5'], 'every message kept')
    await publish(sc, 'rs', 'p6')
    eq(seqs(await s.next(3)), [4, 5, 6], 'sequences continue after restart')
    await close(sc)
  }
}

// Fault tolerance: publishes every 5 ms with acks and a durable subscriber, while the active
// server (pid in argv[5]) is killed with SIGKILL. Every acknowledged message must reach the
// subscriber, once per sequence, in order; the session and subscription go on unchanged.
// Prints FAILOVER_MS: from the kill to the first PubAck after it.
scenarios.ft_failover = async function () {
  const pid = Number(process.argv[5])
  assert(pid > 0, 'pid of the active server in argv[5]')
  const sc = await connect('ft-client', { ackTimeout: 1000 })
  const got = new Map() // seq -> data
  const order = []
  const opts = sc.subscriptionOptions().setDurableName('ftdur').setDeliverAllAvailable()
    .setManualAckMode(true).setAckWait(2000).setMaxInFlight(1000)
  const s = subscribe(sc, 'ftc', null, opts)
  s.sub.on('message', (m) => {
    const seq = m.getSequence()
    const data = String(m.getData())
    if (got.has(seq)) {
      assert(got.get(seq) === data, 'sequence ' + seq + ' overwritten: ' + got.get(seq) + ' then ' + data)
    } else {
      got.set(seq, data)
      order.push(seq)
    }
    m.ack()
  })
  await s.ready
  const acked = []
  let failed = 0
  let killedAt = 0
  let firstAfter = 0
  const start = Date.now()
  let i = 0
  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const n = i++
      const sentAt = Date.now()
      sc.publish('ftc', 'm' + n, (err) => {
        if (err) { failed++; return }
        acked.push('m' + n)
        // The first PubAck of a message published after the kill.
        if (killedAt && sentAt > killedAt && !firstAfter) firstAfter = Date.now()
        if (!killedAt && acked.length === 100) {
          killedAt = Date.now()
          process.kill(pid, 'SIGKILL')
        }
      })
      const afterKill = killedAt ? acked.length - 100 : 0
      if (afterKill >= 200 || Date.now() - start > 20000) {
        clearInterval(tick)
        resolve()
      }
    }, 5)
  })
  assert(killedAt > 0, 'the kill happened')
  assert(firstAfter > 0, 'a PubAck after the kill')
  // Wait (bounded) for the late PubAcks and deliveries.
  const deadline = Date.now() + 10000
  const datas = () => new Set(got.values())
  while (Date.now() < deadline && !acked.every((d) => datas().has(d))) await sleep(50)
  const have = datas()
  const missing = acked.filter((d) => !have.has(d))
  eq(missing, [], 'acknowledged messages missing from the subscriber')
  for (let k = 1; k < order.length; k++) {
    assert(order[k] > order[k - 1], 'first deliveries out of order at ' + order[k])
  }
  console.log('ACKED ' + acked.length + ' FAILED ' + failed + ' FAILOVER_MS ' + (firstAfter - killedAt))
  await close(sc)
}

// Partitioning: one connection publishes to and subscribes on channels owned by two
// servers (part1.> and part2.*); a channel nobody owns times out.
scenarios.partitions = async function () {
  const sc = await connect('part-client', { ackTimeout: 1500 })
  for (let i = 0; i < 5; i++) {
    await publish(sc, 'part1.a.b', 'one' + i)
    await publish(sc, 'part2.x', 'two' + i)
  }
  for (const [ch, prefix] of [['part1.a.b', 'one'], ['part2.x', 'two']]) {
    const s = subscribe(sc, ch, null, sc.subscriptionOptions().setDeliverAllAvailable())
    await s.ready
    const msgs = await s.next(5)
    eq(datas(msgs), [0, 1, 2, 3, 4].map((i) => prefix + i), 'messages of ' + ch)
    eq(seqs(msgs), [1, 2, 3, 4, 5], 'sequences of ' + ch)
  }
  let err = null
  try { await publish(sc, 'nobody', 'x') } catch (e) { err = String(e.message || e) }
  assert(err && /timeout/i.test(err), 'publish on an unowned channel times out, got ' + err)
  await close(sc)
}

// A nats-streaming-server 0.25.6 FILE store migrated by rnats (the fixture's manifest.json
// path in argv[5]). Every channel replays from its first sequence with the reference's
// sequences, timestamps and payloads (sha256); the offline durable and the durable queue
// group resume with their unacked messages first, flagged redelivered, then the rest; both
// ack everything and close their connection (the durables stay).
// Timestamps: this client decodes int64 into a JS number, and JSON.parse reads the
// manifest's the same way, both rounded to the nearest double (within 256 ns); the Rust
// tests compare them exactly.
scenarios.migrated_fixture = async function () {
  const crypto = require('crypto')
  const manifest = JSON.parse(require('fs').readFileSync(process.argv[5], 'utf8'))
  const sha256 = (m) => crypto.createHash('sha256').update(m.getRawData()).digest('hex')
  const bySeq = {}
  for (const [name, ch] of Object.entries(manifest.channels)) {
    bySeq[name] = new Map(ch.msgs.map((w) => [w.seq, w]))
  }
  const checkPayloads = (name, msgs) => {
    for (const m of msgs) {
      const w = bySeq[name].get(m.getSequence())
      assert(w, name + ': no message ' + m.getSequence() + ' in the manifest')
      eq(m.getRawData().length, w.size, name + ' seq ' + w.seq + ' size')
      eq(sha256(m), w.sha256, name + ' seq ' + w.seq + ' sha256')
      eq(m.getTimestampRaw(), w.timestamp, name + ' seq ' + w.seq + ' timestamp')
    }
  }

  const sc = await connect('mig-reader')
  for (const [name, ch] of Object.entries(manifest.channels)) {
    const s = subscribe(sc, name, null, sc.subscriptionOptions().setDeliverAllAvailable())
    await s.ready
    const got = await s.next(ch.msgs.length)
    eq(seqs(got), ch.msgs.map((w) => w.seq), name + ' replay sequences')
    eq(got[0].getSequence(), ch.first_seq, name + ' first sequence')
    eq(got[got.length - 1].getSequence(), ch.last_seq, name + ' last sequence')
    assert(got.every((m) => !m.isRedelivered()), name + ': replay flagged redelivered')
    checkPayloads(name, got)
    await unsubscribe(s)
    eq(s.msgs.length, ch.msgs.length, name + ': more messages than stored')
  }
  await close(sc)

  for (const d of manifest.durables) {
    const c = await connect(d.client_id)
    const opts = c.subscriptionOptions().setDurableName(d.durable_name).setManualAckMode(true)
      .setMaxInFlight(d.max_inflight).setAckWait(d.ack_wait_s * 1000).setDeliverAllAvailable()
    const s = subscribe(c, d.channel, d.queue_group, opts)
    await s.ready
    const r = d.expect_on_resume
    const fresh = []
    for (let q = r.then_new_from; q <= r.then_new_to; q++) fresh.push(q)
    const what = d.channel + ' durable ' + d.durable_name + (d.queue_group ? ' queue ' + d.queue_group : '')
    const got = await s.next(r.redelivered_first.length + fresh.length)
    const first = got.slice(0, r.redelivered_first.length)
    const rest = got.slice(r.redelivered_first.length)
    eq(seqs(first), r.redelivered_first, what + ': unacked messages first')
    assert(first.every((m) => m.isRedelivered()), what + ': unacked messages flagged redelivered')
    eq(seqs(rest), fresh, what + ': then the rest')
    assert(rest.every((m) => !m.isRedelivered()), what + ': new messages not flagged')
    checkPayloads(d.channel, got)
    for (const m of got) m.ack()
    await sleep(300) // the acks reach the server; nothing else arrives
    eq(s.msgs.length, got.length, what + ': nothing delivered twice')
    await close(c)
  }
}

async function main () {
  const fn = scenarios[scenario]
  if (!fn) fail('unknown scenario (have: ' + Object.keys(scenarios).join(', ') + ')')
  const guard = setTimeout(() => fail('scenario timed out after ' + SCENARIO_MS + ' ms'), SCENARIO_MS)
  try {
    await fn()
  } catch (e) {
    fail(e && e.stack ? e.stack : String(e))
  }
  clearTimeout(guard)
  console.log('OK ' + scenario)
  for (const c of conns) {
    try { c.close() } catch (e) {}
  }
  process.exit(0)
}

main()
