"""Core-protocol interop tests driven by the official Python client (nats-py).

Every test runs once per selected server (see conftest.py: RNATS_SERVERS) against a
fresh server started with `-a 127.0.0.1 -p -1`. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats import errors

T = 5.0  # default bound for any single wait, seconds


async def connect(server, **kw):
    async def _err(e):  # keep errors visible in -rA output without the default noisy logger
        errs.append(e)

    errs: list[Exception] = []
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("allow_reconnect", False)
    kw.setdefault("max_reconnect_attempts", 0)
    nc = await asyncio.wait_for(nats.connect(server.url, error_cb=_err, **kw), T)
    nc._test_errors = errs  # type: ignore[attr-defined]
    return nc


async def barrier(nc):
    """Round trip that is ordered after everything this client has published so far.

    nats-py 2.16 writes the flush() PING straight to the transport, ahead of publishes still
    sitting in its pending buffer, so a single flush() is not a barrier. The first flush lets the
    flusher task write the pending buffer; the second PING is then behind it on the wire, and its
    PONG comes after every MSG the server sent us in response to those publishes.
    """
    await nc.flush(timeout=T)
    await nc.flush(timeout=T)


async def next_msgs(sub, n, timeout=T):
    out = []
    for _ in range(n):
        out.append(await sub.next_msg(timeout=timeout))
    return out


async def close_all(*ncs):
    for nc in ncs:
        if not nc.is_closed:
            await asyncio.wait_for(nc.close(), T)


# ------------------------------------------------------------------------------------------------
async def test_info_basics(server):
    nc = await connect(server)
    try:
        info = nc._server_info
        assert info["proto"] == 1
        assert info["headers"] is True
        assert info["max_payload"] == 1048576
        assert nc.max_payload == 1048576
        assert isinstance(info["server_id"], str) and info["server_id"]
        assert info["port"] == server.port
        assert info["host"] == "127.0.0.1"
        assert "auth_required" not in info or info["auth_required"] is False
        await barrier(nc)
    finally:
        await close_all(nc)


async def test_pubsub_literal(server):
    sub_nc = await connect(server)
    pub_nc = await connect(server)
    try:
        sub = await sub_nc.subscribe("greet.literal")
        await barrier(sub_nc)
        for i in range(5):
            await pub_nc.publish("greet.literal", f"hello {i}".encode())
        await pub_nc.publish("greet.other", b"not for you")
        await barrier(pub_nc)
        msgs = await next_msgs(sub, 5)
        assert [m.data for m in msgs] == [f"hello {i}".encode() for i in range(5)]
        assert all(m.subject == "greet.literal" for m in msgs)
        assert all(m.reply == "" for m in msgs)
        # nothing else is pending after the ordered stream (greet.other never matched)
        await barrier(sub_nc)
        assert sub.pending_msgs == 0
    finally:
        await close_all(sub_nc, pub_nc)


async def test_wildcards(server):
    nc = await connect(server)
    pub = await connect(server)
    try:
        star = await nc.subscribe("foo.*")
        gt = await nc.subscribe("foo.>")
        exact = await nc.subscribe("foo")
        mid = await nc.subscribe("a.*.c")
        await barrier(nc)
        for subj in ("foo", "foo.bar", "foo.bar.baz", "a.b.c", "a.b.c.d", "a.c"):
            await pub.publish(subj, subj.encode())
        # sentinel, ordered after everything above on every subscription it matches
        await pub.publish("foo.end", b"end")
        await pub.publish("a.end.c", b"end")
        await pub.publish("foo", b"end")
        await barrier(pub)

        async def until_end(sub):
            got = []
            while True:
                m = await sub.next_msg(timeout=T)
                if m.data == b"end":
                    return got
                got.append(m.subject)

        assert await until_end(star) == ["foo.bar"]  # not foo, not foo.bar.baz
        assert await until_end(gt) == ["foo.bar", "foo.bar.baz"]  # not foo
        assert await until_end(exact) == ["foo"]
        assert await until_end(mid) == ["a.b.c"]
    finally:
        await close_all(nc, pub)


async def test_queue_group_exactly_once(server):
    members = [await connect(server) for _ in range(3)]
    pub = await connect(server)
    try:
        got: list[list[int]] = [[], [], []]
        subs = []
        for i, nc in enumerate(members):
            async def cb(msg, i=i):
                got[i].append(int(msg.data))
            subs.append(await nc.subscribe("work.q", queue="workers", cb=cb))
            await barrier(nc)
        # a plain subscriber on the same subject still gets every message
        plain = await pub.subscribe("work.q")
        await barrier(pub)

        n = 300
        for k in range(n):
            await pub.publish("work.q", str(k).encode())
        await barrier(pub)  # server has routed all 300 into member outbound buffers
        # drain = UNSUB + wait until everything already delivered has been processed by the callback
        await asyncio.wait_for(asyncio.gather(*(s.drain() for s in subs)), T)

        counts = [len(g) for g in got]
        all_msgs = sorted(x for g in got for x in g)
        assert sum(counts) == n, counts
        assert all_msgs == list(range(n)), "each message exactly once across the group"
        assert all(c > 0 for c in counts), f"every member should get some messages: {counts}"
        plain_msgs = await next_msgs(plain, n)
        assert [int(m.data) for m in plain_msgs] == list(range(n))
    finally:
        await close_all(*members, pub)


async def test_request_reply(server):
    svc = await connect(server)
    cli = await connect(server)
    try:
        async def handler(msg):
            await msg.respond(msg.data.upper())

        await svc.subscribe("svc.upper", cb=handler)
        await barrier(svc)
        resp = await cli.request("svc.upper", b"hello", timeout=T)
        assert resp.data == b"HELLO"
        # many concurrent requests over the shared response subscription
        resps = await asyncio.gather(*(cli.request("svc.upper", f"r{i}".encode(), timeout=T) for i in range(20)))
        assert sorted(r.data for r in resps) == sorted(f"R{i}".encode() for i in range(20))

        # explicit reply subject on a raw publish
        inbox = cli.new_inbox()
        isub = await cli.subscribe(inbox)
        await cli.publish("svc.upper", b"manual", reply=inbox)
        m = await isub.next_msg(timeout=T)
        assert m.data == b"MANUAL"
        assert m.subject == inbox
    finally:
        await close_all(svc, cli)


async def test_headers_round_trip(server):
    nc = await connect(server)
    pub = await connect(server)
    try:
        sub = await nc.subscribe("hdr.test")
        await barrier(nc)
        hdrs = {"X-Foo": "bar", "X-Multi-Word": "a b  c", "X-Colon": "k: v", "X-Empty-Payload": "1",
                "X-Unicode": "héllo ✓"}
        await pub.publish("hdr.test", b"payload", headers=hdrs)
        await pub.publish("hdr.test", b"", headers={"Only": "header"})
        await pub.publish("hdr.test", b"no headers")
        await barrier(pub)
        m1, m2, m3 = await next_msgs(sub, 3)
        assert m1.data == b"payload" and m1.headers == hdrs
        assert m2.data == b"" and m2.headers == {"Only": "header"}
        assert m3.data == b"no headers" and not m3.headers

        # request with headers: responder sees them and answers with headers
        async def handler2(msg):
            await nc.publish(msg.reply, b"ok", headers={"Echo": msg.headers.get("Ask", "")})

        await nc.subscribe("hdr.req", cb=handler2)
        await barrier(nc)
        r = await pub.request("hdr.req", b"?", timeout=T, headers={"Ask": "please"})
        assert r.data == b"ok" and r.headers == {"Echo": "please"}
    finally:
        await close_all(nc, pub)


async def test_headers_multi_value_passthrough(server):
    """A header block with a repeated key must reach subscribers byte-for-byte.

    nats-py's API only takes a dict, so the HPUB is written on a raw socket; one raw subscriber
    checks the exact HMSG bytes and a nats-py subscriber checks it parses.
    """
    nc = await connect(server)
    raw_sub_r, raw_sub_w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), T)
    raw_pub_r, raw_pub_w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), T)
    try:
        for r in (raw_sub_r, raw_pub_r):
            info = await asyncio.wait_for(r.readline(), T)
            assert info.startswith(b"INFO ") and info.endswith(b" \r\n")
            assert json.loads(info[5:])["headers"] is True
        hello = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
        raw_sub_w.write(hello + b"SUB hdr.multi 7\r\nPING\r\n")
        await raw_sub_w.drain()
        assert await asyncio.wait_for(raw_sub_r.readline(), T) == b"PONG\r\n"
        sub = await nc.subscribe("hdr.multi")
        await barrier(nc)

        hdr = b"NATS/1.0\r\nX-A: 1\r\nX-A: 2\r\nB: x\r\n\r\n"
        payload = b"multi"
        raw_pub_w.write(hello + b"HPUB hdr.multi %d %d\r\n" % (len(hdr), len(hdr) + len(payload)) + hdr + payload
                        + b"\r\nPING\r\n")
        await raw_pub_w.drain()
        assert await asyncio.wait_for(raw_pub_r.readline(), T) == b"PONG\r\n"

        expect = b"HMSG hdr.multi 7 %d %d\r\n" % (len(hdr), len(hdr) + len(payload)) + hdr + payload + b"\r\n"
        # (with protocol 1 an async INFO carrying connect_info follows the first PONG: skip it)
        line = await asyncio.wait_for(raw_sub_r.readline(), T)
        while line.startswith(b"INFO "):
            line = await asyncio.wait_for(raw_sub_r.readline(), T)
        got = line + await asyncio.wait_for(raw_sub_r.readexactly(len(expect) - len(line)), T)
        assert got == expect

        m = await sub.next_msg(timeout=T)
        assert m.data == payload
        assert m.headers is not None and m.headers.get("B") == "x"
        assert m.headers.get("X-A") in ("1", "2")  # nats-py keeps one value per key
    finally:
        for w in (raw_sub_w, raw_pub_w):
            w.close()
        await close_all(nc)


async def test_no_responders(server):
    nc = await connect(server)
    try:
        assert nc._server_info["headers"] is True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(errors.NoRespondersError):
            await nc.request("nobody.home", b"hi", timeout=T)
        assert loop.time() - t0 < T / 2, "no-responders must be immediate, not a timeout"
        # the connection stays usable
        sub = await nc.subscribe("still.ok")
        await nc.publish("still.ok", b"x")
        assert (await sub.next_msg(timeout=T)).data == b"x"
    finally:
        await close_all(nc)


async def test_unsubscribe_with_limit(server):
    nc = await connect(server)
    pub = await connect(server)
    nc2 = nc
    try:
        sub = await nc.subscribe("lim.a")
        await sub.unsubscribe(limit=5)  # UNSUB <sid> 5
        # nats-py's subscribe(max_msgs=N) is a client-side limit only (no UNSUB is sent), so it
        # lives on its own connection and only the client-visible count is checked for it
        nc2 = await connect(server)
        sub2 = await nc2.subscribe("lim.b", max_msgs=3)
        await barrier(nc)
        await barrier(nc2)
        in_before = nc.stats["in_msgs"]
        for i in range(10):
            await pub.publish("lim.a", str(i).encode())
            await pub.publish("lim.b", str(i).encode())
        await barrier(pub)
        await barrier(nc)  # every MSG the server sent us arrived before this PONG
        a = await next_msgs(sub, 5)
        b = await next_msgs(sub2, 3)
        assert [m.data for m in a] == [str(i).encode() for i in range(5)]
        assert [m.data for m in b] == [str(i).encode() for i in range(3)]
        # the server itself stopped delivering (not just the client discarding)
        assert nc.stats["in_msgs"] - in_before == 5
        # after the limit the interest is gone server-side: a new publish reaches nobody
        with pytest.raises(errors.NoRespondersError):
            await pub.request("lim.a", b"?", timeout=T)
    finally:
        await close_all(nc, nc2, pub)


async def test_unsubscribe_immediate(server):
    nc = await connect(server)
    try:
        sub = await nc.subscribe("unsub.now")
        await nc.publish("unsub.now", b"1")
        assert (await sub.next_msg(timeout=T)).data == b"1"
        await sub.unsubscribe()
        await barrier(nc)
        in_before = nc.stats["in_msgs"]
        await nc.publish("unsub.now", b"2")
        await barrier(nc)
        assert nc.stats["in_msgs"] == in_before
    finally:
        await close_all(nc)


async def test_flush_orders_after_messages(server):
    """Messages the server sends a connection precede the PONG answering that connection's PING."""
    nc = await connect(server)
    try:
        sub = await nc.subscribe("flush.t")
        n = 1000
        for i in range(n):
            await nc.publish("flush.t", str(i).encode())
        await barrier(nc)
        assert sub.pending_msgs == n
        msgs = await next_msgs(sub, n)
        assert [int(m.data) for m in msgs] == list(range(n))
        # plain flush() round trips keep working
        for _ in range(10):
            await nc.flush(timeout=T)
    finally:
        await close_all(nc)


async def test_many_concurrent_clients(server):
    n_clients, per_client = 50, 10
    ncs = await asyncio.wait_for(asyncio.gather(*(connect(server, name=f"c{i}") for i in range(n_clients))), 3 * T)
    try:
        subs = []
        for nc in ncs:
            subs.append(await nc.subscribe("conc.all"))
            subs.append(await nc.subscribe(f"conc.direct.{len(subs) // 2}"))
        await asyncio.wait_for(asyncio.gather(*(barrier(nc) for nc in ncs)), T)

        async def publish(i, nc):
            for k in range(per_client):
                await nc.publish("conc.all", f"{i}:{k}".encode())
            await nc.publish(f"conc.direct.{(i + 1) % n_clients}", f"from {i}".encode())
            await barrier(nc)

        await asyncio.wait_for(asyncio.gather(*(publish(i, nc) for i, nc in enumerate(ncs))), 3 * T)

        async def check(i):
            all_sub, direct_sub = subs[2 * i], subs[2 * i + 1]
            msgs = await next_msgs(all_sub, n_clients * per_client)
            seen: dict[int, list[int]] = {}
            for m in msgs:
                p, k = m.data.decode().split(":")
                seen.setdefault(int(p), []).append(int(k))
            assert len(seen) == n_clients
            # per-publisher order is preserved
            assert all(v == list(range(per_client)) for v in seen.values())
            d = await direct_sub.next_msg(timeout=T)
            assert d.data == f"from {(i - 1) % n_clients}".encode()

        await asyncio.wait_for(asyncio.gather(*(check(i) for i in range(n_clients))), 4 * T)
    finally:
        await asyncio.wait_for(asyncio.gather(*(nc.close() for nc in ncs), return_exceptions=True), T)


async def test_no_echo(server):
    quiet = await connect(server, no_echo=True)
    loud = await connect(server)
    other = await connect(server)
    try:
        qsub = await quiet.subscribe("echo.t")
        lsub = await loud.subscribe("echo.t")
        await barrier(quiet)
        await barrier(loud)
        await quiet.publish("echo.t", b"from-quiet")
        await barrier(quiet)
        await loud.publish("echo.t", b"from-loud")
        await barrier(loud)
        await other.publish("echo.t", b"from-other")
        await barrier(other)
        await barrier(quiet)
        # quiet (echo=false) never sees its own message, but sees everyone else's
        got_q = await next_msgs(qsub, 2)
        assert [m.data for m in got_q] == [b"from-loud", b"from-other"]
        assert qsub.pending_msgs == 0
        # loud (echo=true, the default) sees its own message too
        got_l = await next_msgs(lsub, 3)
        assert [m.data for m in got_l] == [b"from-quiet", b"from-loud", b"from-other"]
    finally:
        await close_all(quiet, loud, other)


async def test_large_payload_and_max_payload(server):
    nc = await connect(server)
    pub = await connect(server)
    try:
        sub = await nc.subscribe("big.t")
        await barrier(nc)
        mp = pub.max_payload
        assert mp == 1024 * 1024
        big = bytes(range(256)) * (mp // 256)  # exactly max_payload
        near = big[: mp - 100]
        await pub.publish("big.t", near)
        await pub.publish("big.t", big)
        await barrier(pub)
        m1, m2 = await next_msgs(sub, 2)
        assert m1.data == near
        assert m2.data == big
        with pytest.raises(errors.MaxPayloadError):
            await pub.publish("big.t", big + b"x")
        # client-side rejection: the connection is still fine
        await pub.publish("big.t", b"small")
        await barrier(pub)
        assert (await sub.next_msg(timeout=T)).data == b"small"
        assert not pub.is_closed and not nc.is_closed
    finally:
        await close_all(nc, pub)


async def test_auth_user_password(start_server):
    srv = start_server("--user", "alice", "--pass", "s3cret")
    nc = await connect(srv, user="alice", password="s3cret")
    try:
        assert nc._server_info.get("auth_required") is True
        sub = await nc.subscribe("auth.ok")
        await nc.publish("auth.ok", b"1")
        assert (await sub.next_msg(timeout=T)).data == b"1"
    finally:
        await close_all(nc)
    with pytest.raises(Exception) as ei:
        bad = await connect(srv, user="alice", password="wrong")
        await close_all(bad)
    assert "authorization" in str(ei.value).lower() or isinstance(
        ei.value, (errors.AuthorizationError, errors.NoServersError)), repr(ei.value)
