#!/usr/bin/env python3
"""Raw-protocol probe for NATS servers.

For every case a fresh server instance is started (reference nats-server or
rnats-server; both take the same flags: `-a 127.0.0.1 -p -1` plus per-case
flags), one or more raw TCP connections are opened, exact bytes are sent and
exactly what comes back is recorded, together with whether the server closed
the connection (read until EOF with a bounded window).

The report is deterministic text, one block per case; variable INFO fields
(server_id, server_name, client_id, nonce, port, xkey) are masked, so two
servers can be compared with:

    diff <(scripts/probe_raw.py --server-cmd .venv/bin/nats-server) \
         <(scripts/probe_raw.py --server-cmd target/debug/rnats-server)

Options: --only NAME (substring, repeatable), --list, --log-dir DIR (server
log of each case -> DIR/<case>.log), --extra-args=-DV, --with-log (append the
server's normalised log lines to each block; not meant for diffing), --close-kind
(distinguish EOF from RST; RST vs EOF depends on timing when the server closes
with unread input, so it is off by default).

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

LISTEN_RE = re.compile(rb"Listening for client connections on ([0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)")

# Fields whose values differ per run / per connection.
MASK_STR_FIELDS = ("server_id", "server_name", "nonce", "xkey")
MASK_NUM_FIELDS = ("client_id", "port")

CRLF = b"\r\n"
STEP_WINDOW = 0.3    # after an intermediate step: collect what arrives
FINAL_WINDOW = 1.0   # after the last step: wait this long for more data / EOF


def mask(data: bytes) -> bytes:
    for f in MASK_STR_FIELDS:
        data = re.sub(rb'"' + f.encode() + rb'":"[^"]*"', b'"' + f.encode() + b'":"<masked>"', data)
    for f in MASK_NUM_FIELDS:
        data = re.sub(rb'"' + f.encode() + rb'":\d+', b'"' + f.encode() + b'":0', data)
    return data


# ----------------------------------------------------------------------------- protocol helpers
def pub(subj: str, payload: bytes | str, reply: str | None = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    r = f" {reply}" if reply else ""
    return f"PUB {subj}{r} {len(payload)}\r\n".encode() + payload + b"\r\n"


def hpub(subj: str, hdrs: bytes, payload: bytes | str, reply: str | None = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    r = f" {reply}" if reply else ""
    return f"HPUB {subj}{r} {len(hdrs)} {len(hdrs) + len(payload)}\r\n".encode() + hdrs + payload + b"\r\n"


def connect(**kw) -> bytes:
    import json
    return b"CONNECT " + json.dumps(kw, separators=(",", ":")).encode() + b"\r\n"


@dataclass
class Step:
    data: bytes
    conn: int = 0
    label: str | None = None     # printed instead of repr(data) (for huge inputs)
    window: float | None = None  # read window after this step


def S(data: bytes | str, label: str | None = None, window: float | None = None, conn: int = 0) -> Step:
    if isinstance(data, str):
        data = data.encode()
    return Step(data, conn, label, window)


@dataclass
class Case:
    name: str
    note: str
    steps: list[Step]
    server_args: tuple[str, ...] = ()   # extra server flags for this case
    conns: int = 1
    show_info: bool = False             # print the (masked) INFO of each connection
    final_window: float = FINAL_WINDOW
    # If set, per-step recv lines are replaced by summary(total bytes received per conn) -> lines
    # (for cases whose exact interleaving is legitimately random, e.g. queue groups).
    summary: object = None


def queue_summary(per_conn: list[bytes]) -> list[str]:
    out = []
    q_total = 0
    for i, d in enumerate(per_conn):
        q = len(re.findall(rb"MSG foo 1 ", d))
        plain = len(re.findall(rb"MSG foo 2 ", d))
        q_total += q
        out.append(f"conn[{i}]: queue-sub deliveries>0: {q > 0 or 'no'}; plain-sub deliveries: {plain}; "
                   f"PONG: {d.count(b'PONG')}; -ERR: {d.count(b'-ERR')}")
    out.append(f"queue deliveries total: {q_total}")
    return out


AUTH = ("--user", "a", "--pass", "b")
HDR = connect(verbose=False, pedantic=False, headers=True, protocol=1)
NR = b'CONNECT {"headers":true,"no_responders":true,"protocol":1}\r\n'
QUIET = connect(verbose=False, pedantic=False)


def build_cases() -> list[Case]:
    c: list[Case] = []
    add = c.append

    # --- INFO / connection lifecycle ------------------------------------------------------------
    add(Case("info_line", "first bytes the server sends (INFO, masked), then nothing else",
             [], show_info=True, final_window=0.5))
    add(Case("idle_5s", "client connects and sends nothing for 5s: does the server close it?",
             [], final_window=5.0))
    add(Case("ping_before_connect", "PING without CONNECT", [S("PING\r\n")]))
    add(Case("no_connect_defaults", "no CONNECT: SUB/PUB (are verbose/pedantic on by default?)",
             [S("SUB foo 1\r\n" + "PUB foo.* 1\r\nx\r\n" + "PUB foo 1\r\ny\r\nPING\r\n")]))
    add(Case("connect_empty_obj", "CONNECT {} then PING", [S("CONNECT {}\r\nPING\r\n")]))
    add(Case("connect_empty_obj_defaults", "CONNECT {} then PUB foo.* (pedantic default?)",
             [S("CONNECT {}\r\nSUB > 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")]))
    add(Case("connect_verbose_false_pedantic_default", "CONNECT {verbose:false} then PUB foo.*",
             [S("CONNECT {\"verbose\":false}\r\nSUB > 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")]))
    add(Case("connect_quiet", "CONNECT {verbose:false,pedantic:false} then SUB/PUB/PING",
             [S(QUIET + b"SUB foo 1\r\n" + pub("foo", "hi") + b"PING\r\n")]))
    add(Case("connect_no_arg", "CONNECT with no argument", [S("CONNECT\r\n")]))
    add(Case("connect_invalid_json", "CONNECT with invalid JSON", [S("CONNECT {bad json\r\nPING\r\n")]))
    add(Case("connect_json_array", "CONNECT []", [S("CONNECT []\r\nPING\r\n")]))
    add(Case("connect_protocol_2", "CONNECT {\"protocol\":2}", [S("CONNECT {\"protocol\":2}\r\nPING\r\n")]))
    add(Case("connect_protocol_0", "CONNECT {\"protocol\":0}", [S("CONNECT {\"protocol\":0}\r\nPING\r\n")]))
    add(Case("connect_protocol_1", "CONNECT {\"protocol\":1} (async INFO after CONNECT?)",
             [S("CONNECT {\"protocol\":1}\r\nPING\r\n")]))
    add(Case("connect_protocol_1_headers_false", "CONNECT protocol 1, headers false, verbose false",
             [S("CONNECT {\"protocol\":1,\"headers\":false,\"verbose\":false}\r\nPING\r\n")]))
    add(Case("connect_protocol_1_split", "CONNECT protocol 1 alone, then (later) PING",
             [S("CONNECT {\"protocol\":1,\"verbose\":false}\r\n"), S("PING\r\n")]))
    add(Case("connect_protocol_1_two_pings", "CONNECT protocol 1; PING; PING (INFO only after first PONG?)",
             [S("CONNECT {\"protocol\":1,\"verbose\":false}\r\nPING\r\n"), S("PING\r\n")]))
    add(Case("ping_then_connect_protocol_1", "PING before CONNECT, then CONNECT protocol 1, then PING",
             [S("PING\r\n"), S("CONNECT {\"protocol\":1,\"verbose\":false}\r\nPING\r\n")]))
    add(Case("connect_no_responders_without_headers", "CONNECT {\"no_responders\":true,\"headers\":false}",
             [S("CONNECT {\"no_responders\":true,\"headers\":false}\r\nPING\r\n")]))
    add(Case("connect_twice", "two CONNECTs on one connection",
             [S("CONNECT {}\r\n"), S("CONNECT {\"verbose\":false}\r\nPING\r\n")]))
    add(Case("connect_unknown_fields", "CONNECT with unknown JSON fields",
             [S("CONNECT {\"foo\":1,\"bar\":[1,2]}\r\nPING\r\n")]))
    add(Case("connect_wrong_types", "CONNECT with verbose as a string",
             [S("CONNECT {\"verbose\":\"yes\"}\r\nPING\r\n")]))
    add(Case("connect_lowercase", "lower-case connect", [S("connect {\"verbose\":false}\r\nPING\r\n")]))
    add(Case("connect_after_sub", "SUB before CONNECT, then CONNECT", [S("SUB foo 1\r\nCONNECT {}\r\nPING\r\n")]))

    # --- verbose ---------------------------------------------------------------------------------
    add(Case("verbose_sequence", "CONNECT verbose then PING, SUB, PUB (+OK after each?)",
             [S("CONNECT {\"verbose\":true}\r\n"), S("PING\r\n"), S("SUB a 1\r\n"), S("PUB a 1\r\nx\r\n")]))
    add(Case("verbose_unsub", "verbose: SUB then UNSUB", [S("CONNECT {\"verbose\":true}\r\nSUB a 1\r\nUNSUB 1\r\n")]))
    add(Case("verbose_bad_subject", "verbose: SUB with invalid subject",
             [S("CONNECT {\"verbose\":true}\r\nSUB foo..bar 1\r\nPING\r\n")]))
    add(Case("verbose_unknown_verb", "verbose: unknown verb", [S("CONNECT {\"verbose\":true}\r\nFOO\r\n")]))
    add(Case("verbose_pong", "verbose: client PONG (+OK?)", [S("CONNECT {\"verbose\":true}\r\nPONG\r\n")]))

    # --- verbs / line endings ----------------------------------------------------------------------
    add(Case("unknown_verb", "FOO\\r\\n", [S("FOO\r\n")]))
    add(Case("unknown_verb_no_newline", "FOO without line end", [S("FOO")]))
    add(Case("unknown_verb_after_good", "PING then FOO in one write", [S("PING\r\nFOO\r\nPING\r\n")]))
    add(Case("verb_prefix_pux", "PUX\\r\\n (valid first letter)", [S("PUX\r\n")]))
    add(Case("verb_pingx", "PINGX\\r\\n", [S("PINGX\r\n")]))
    add(Case("verb_pin", "PIN\\r\\n", [S("PIN\r\n")]))
    add(Case("verb_subx", "SUBX foo 1", [S("SUBX foo 1\r\nPING\r\n")]))
    add(Case("empty_line", "a bare \\r\\n", [S("\r\nPING\r\n")]))
    add(Case("leading_space", "' PING'", [S(" PING\r\n")]))
    add(Case("lowercase_sub_pub", "lower-case sub/pub/ping",
             [S(QUIET + b"sub foo 1\r\npub foo 2\r\nhi\r\nping\r\n")]))
    add(Case("mixedcase_verbs", "mixed-case verbs",
             [S(QUIET + b"Sub foo 1\r\nPuB foo 2\r\nhi\r\nPiNg\r\n")]))
    add(Case("ping_trailing_garbage", "PING xyz", [S("PING xyz\r\n")]))
    add(Case("pong_trailing_garbage", "PONG xyz then PING", [S("PONG xyz\r\nPING\r\n")]))
    add(Case("ping_bare_lf", "PING\\n", [S("PING\n")]))
    add(Case("ping_bare_cr", "PING\\r then PING\\r\\n", [S("PING\rPING\r\n")]))
    add(Case("sub_bare_lf", "SUB with bare \\n, then PING\\n", [S(QUIET + b"SUB foo 1\nPING\n")]))
    add(Case("pub_bare_lf", "SUB; PUB with bare \\n line ends",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 2\nhi\nPING\n")]))
    add(Case("pub_bare_lf_ctrl_only", "SUB; PUB ctrl line with \\n, payload with \\r\\n",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 2\nhi\r\nPING\r\n")]))
    add(Case("tabs_as_separators", "SUB\\tfoo\\t1 / PUB\\tfoo\\t2",
             [S(QUIET + b"SUB\tfoo\t1\r\nPUB\tfoo\t2\r\nhi\r\nPING\r\n")]))
    add(Case("multiple_spaces", "SUB  foo   1 / PUB   foo  2",
             [S(QUIET + b"SUB  foo   1\r\nPUB   foo  2\r\nhi\r\nPING\r\n")]))
    add(Case("trailing_space_args", "SUB foo 1<space> / PUB foo 2<space>",
             [S(QUIET + b"SUB foo 1 \r\nPUB foo 2 \r\nhi\r\nPING\r\n")]))
    add(Case("ping_split_writes", "P / ING\\r / \\n in three writes",
             [S("P", window=0.2), S("ING\r", window=0.2), S("\n")]))
    add(Case("pub_split_writes", "SUB; PUB split inside ctrl line and payload",
             [S(QUIET + b"SUB foo 1\r\nPUB fo", window=0.2), S("o 5\r\nhe", window=0.2), S("llo\r", window=0.2),
              S("\nPING\r\n")]))
    add(Case("ping_pipelined_x3", "PING PING PING", [S("PING\r\nPING\r\nPING\r\n")]))

    # --- control line length -------------------------------------------------------------------------
    add(Case("ctrl_line_5000_with_crlf", "PUB + 5000 x's + \\r\\n",
             [S(b"PUB " + b"x" * 5000 + b"\r\n", label="b'PUB ' + b'x'*5000 + b'\\r\\n'")]))
    add(Case("ctrl_line_5000_no_crlf", "PUB + 5000 x's, no line end",
             [S(b"PUB " + b"x" * 5000, label="b'PUB ' + b'x'*5000")]))
    add(Case("ctrl_line_sub_5000_no_crlf", "SUB + 5000 x's, no line end",
             [S(b"SUB " + b"x" * 5000, label="b'SUB ' + b'x'*5000")]))
    add(Case("ctrl_line_unknown_5000_no_crlf", "5000 x's (no verb), no line end",
             [S(b"x" * 5000, label="b'x'*5000")]))
    add(Case("ctrl_line_connect_5000", "CONNECT with 5000-byte JSON",
             [S(b"CONNECT {\"name\":\"" + b"n" * 5000 + b"\"}\r\nPING\r\n",
                label="b'CONNECT {\"name\":\"' + b'n'*5000 + b'\"}\\r\\nPING\\r\\n'")]))
    add(Case("ctrl_line_ping_5000_garbage", "PING + 5000 bytes of garbage + \\r\\n",
             [S(b"PING " + b"g" * 5000 + b"\r\n", label="b'PING ' + b'g'*5000 + b'\\r\\n'")]))
    add(Case("ctrl_line_sub_arg_4096", "SUB whose argument part is exactly 4096 bytes",
             [S(QUIET + b"SUB " + b"s" * 4094 + b" 1\r\nPING\r\n",
                label="QUIET + b'SUB ' + b's'*4094 + b' 1\\r\\nPING\\r\\n' (arg len 4096)")]))
    add(Case("ctrl_line_sub_arg_4097", "SUB whose argument part is 4097 bytes",
             [S(QUIET + b"SUB " + b"s" * 4095 + b" 1\r\nPING\r\n",
                label="QUIET + b'SUB ' + b's'*4095 + b' 1\\r\\nPING\\r\\n' (arg len 4097)")]))
    add(Case("ctrl_line_pub_arg_4097_split", "PUB arg 4097 bytes, sent in two writes",
             [S(QUIET + b"PUB " + b"p" * 3000, label="QUIET + b'PUB ' + b'p'*3000", window=0.2),
              S(b"p" * 1095 + b" 0\r\n\r\nPING\r\n", label="b'p'*1095 + b' 0\\r\\n\\r\\nPING\\r\\n' (arg len 4097)")]))
    add(Case("ctrl_line_sub_pub_arg_4096", "SUB and PUB with arg exactly 4096 bytes: accepted and delivered?",
             [S(QUIET + b"SUB " + b"s" * 4094 + b" 1\r\n" + b"PUB " + b"s" * 4094 + b" 1\r\nx\r\nPING\r\n",
                label="QUIET + SUB/PUB with 4094-byte subject (arg 4096) + PING")]))

    # --- PUB -------------------------------------------------------------------------------------------
    add(Case("pub_max_payload_exceeded", "PUB foo 2000000 (> max_payload 1MiB)", [S("PUB foo 2000000\r\n")]))
    add(Case("pub_max_payload_exact", "SUB; PUB foo 1048576 with payload; then PING",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 1048576\r\n" + b"z" * 1048576 + b"\r\nPING\r\n",
                label="QUIET + b'SUB foo 1\\r\\nPUB foo 1048576\\r\\n' + b'z'*1048576 + b'\\r\\nPING\\r\\n'")]))
    add(Case("pub_max_payload_plus1", "PUB foo 1048577 (header only)", [S("PUB foo 1048577\r\n")]))
    add(Case("pub_max_payload_exceeded_verbose_off", "verbose off: PUB foo 2000000",
             [S(QUIET + b"PUB foo 2000000\r\n")]))
    add(Case("pub_payload_longer", "PUB foo 2 with payload 'hello'", [S(QUIET + b"PUB foo 2\r\nhello\r\n")]))
    add(Case("pub_payload_longer_sub", "SUB foo; PUB foo 2 with 'hello' (what is delivered?)",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 2\r\nhello\r\n")]))
    add(Case("pub_payload_shorter", "SUB; PUB foo 5 with 'hi\\r\\n', then PING",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 5\r\nhi\r\n"), S("PING\r\n")]))
    add(Case("pub_bad_terminator", "PUB foo 2 then 'hiXY' (no \\r\\n after payload)",
             [S(QUIET + b"PUB foo 2\r\nhiXY")]))
    add(Case("pub_bad_terminator_sub", "SUB foo; PUB foo 2 then 'hiXY\\r\\n'",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 2\r\nhiXY\r\nPING\r\n")]))
    add(Case("pub_terminator_lf_only", "SUB; PUB foo 2 then 'hi\\n'",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 2\r\nhi\nPING\r\n")]))
    add(Case("pub_too_few_args", "PUB foo", [S("PUB foo\r\n")]))
    add(Case("pub_no_args", "PUB", [S("PUB\r\n")]))
    add(Case("pub_only_space", "'PUB '", [S("PUB \r\n")]))
    add(Case("pub_too_many_args", "PUB foo bar baz 2", [S("PUB foo bar baz 2\r\nhi\r\n")]))
    add(Case("pub_non_numeric_size", "PUB foo abc", [S("PUB foo abc\r\n")]))
    add(Case("pub_negative_size", "PUB foo -1", [S("PUB foo -1\r\n")]))
    add(Case("pub_size_plus_sign", "PUB foo +2", [S("PUB foo +2\r\nhi\r\n")]))
    add(Case("pub_size_overflow", "PUB foo 99999999999999999999", [S("PUB foo 99999999999999999999\r\n")]))
    add(Case("pub_size_leading_zero", "SUB foo; PUB foo 05 hello (size echoed as 05?)",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 05\r\nhello\r\nPING\r\n")]))
    add(Case("pub_reply_size_leading_zero", "SUB foo; PUB foo r 002 hi",
             [S(QUIET + b"SUB foo 1\r\nPUB foo r 002\r\nhi\r\nPING\r\n")]))
    add(Case("pub_empty_payload", "SUB foo; PUB foo 0", [S(QUIET + b"SUB foo 1\r\nPUB foo 0\r\n\r\nPING\r\n")]))
    add(Case("pub_with_reply", "SUB foo; PUB foo bar 2",
             [S(QUIET + b"SUB foo 1\r\nPUB foo bar 2\r\nhi\r\nPING\r\n")]))
    add(Case("pub_wildcard_subject_nonpedantic", "non-pedantic PUB foo.* / foo.> / foo..bar (delivered?)",
             [S(QUIET + b"SUB foo.* 1\r\nSUB > 2\r\n" + pub("foo.*", "x") + pub("foo.>", "y") + pub("foo..bar", "z")
                + b"PING\r\n")]))
    add(Case("pub_binary_payload", "payload containing \\r\\n and NUL",
             [S(QUIET + b"SUB foo 1\r\nPUB foo 6\r\na\r\n\x00\r\n\r\nPING\r\n")]))
    add(Case("pub_no_subscribers", "PUB with no subscriber", [S(QUIET + pub("nobody", "hi") + b"PING\r\n")]))

    # --- SUB / UNSUB -------------------------------------------------------------------------------------
    for subj, nm in (("foo..bar", "double_dot"), ("foo.", "trailing_dot"), (".foo", "leading_dot"),
                     ("foo.>.bar", "fwc_not_last"), ("foo*.bar", "star_in_token"), ("foo>", "gt_in_token"),
                     ("*", "star_only"), (">", "gt_only"), ("foo.*.>", "star_then_gt")):
        add(Case(f"sub_{nm}", f"SUB {subj} 1 then PING", [S(QUIET + f"SUB {subj} 1\r\nPING\r\n".encode())]))
    add(Case("sub_star_in_token_matching", "SUB foo*.bar 1; PUB foo*.bar / fooX.bar",
             [S(QUIET + b"SUB foo*.bar 1\r\n" + pub("foo*.bar", "a") + pub("fooX.bar", "b") + b"PING\r\n")]))
    add(Case("sub_too_few_args", "SUB 1", [S("SUB 1\r\nPING\r\n")]))
    add(Case("sub_no_args", "SUB", [S("SUB\r\nPING\r\n")]))
    add(Case("sub_four_args", "SUB foo q 1 extra", [S("SUB foo q 1 extra\r\nPING\r\n")]))
    add(Case("sub_queue", "SUB foo q 1 then PUB foo", [S(QUIET + b"SUB foo q 1\r\nPUB foo 2\r\nhi\r\nPING\r\n")]))
    add(Case("sub_queue_wildcard_name", "SUB foo q.* 1 (wildcard queue name)", [S(QUIET + b"SUB foo q.* 1\r\nPING\r\n")]))
    add(Case("sub_non_numeric_sid", "SUB foo abc then PUB foo",
             [S(QUIET + b"SUB foo abc\r\nPUB foo 2\r\nhi\r\nPING\r\n")]))
    add(Case("sub_duplicate_sid", "SUB foo 1 twice (same sid) then PUB foo",
             [S(QUIET + b"SUB foo 1\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n")]))
    add(Case("sub_duplicate_sid_then_unsub", "SUB foo 1 twice, UNSUB 1, PUB foo",
             [S(QUIET + b"SUB foo 1\r\nSUB foo 1\r\nUNSUB 1\r\nPUB foo 2\r\nhi\r\nPING\r\n")]))
    add(Case("sub_same_sid_diff_subject", "SUB foo 1, SUB bar 1, PUB foo, PUB bar",
             [S(QUIET + b"SUB foo 1\r\nSUB bar 1\r\n" + pub("foo", "f") + pub("bar", "b") + b"PING\r\n")]))
    add(Case("sub_overlapping_sids", "SUB foo.* 1, foo.> 2, foo.x 3; PUB foo.x (order of MSGs)",
             [S(QUIET + b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB foo.x 3\r\n" + pub("foo.x", "x") + b"PING\r\n")]))
    add(Case("unsub_no_args", "UNSUB", [S("UNSUB\r\nPING\r\n")]))
    add(Case("unsub_non_numeric_max", "SUB foo 1; UNSUB 1 abc; PUB foo (still subscribed?)",
             [S(QUIET + b"SUB foo 1\r\nUNSUB 1 abc\r\n" + pub("foo", "a") + b"PING\r\n")]))
    add(Case("unsub_unknown_sid", "UNSUB 99 (no such sid)", [S(QUIET + b"UNSUB 99\r\nPING\r\n")]))
    add(Case("unsub_too_many_args", "UNSUB 1 2 3", [S(QUIET + b"SUB foo 1\r\nUNSUB 1 2 3\r\nPING\r\n")]))
    add(Case("unsub_auto_max_2", "SUB foo 1; UNSUB 1 2; PUB foo x3",
             [S(QUIET + b"SUB foo 1\r\nUNSUB 1 2\r\n" + pub("foo", "a") + pub("foo", "b") + pub("foo", "c")
                + b"PING\r\n")]))
    add(Case("unsub_auto_max_2_verbose", "verbose: SUB foo 1; UNSUB 1 2; PUB foo x3",
             [S(b"CONNECT {\"verbose\":true,\"pedantic\":false}\r\nSUB foo 1\r\nUNSUB 1 2\r\n" + pub("foo", "a")
                + pub("foo", "b") + pub("foo", "c") + b"PING\r\n")]))
    add(Case("unsub_auto_after_delivered", "SUB foo 1; 2 msgs; UNSUB 1 1 (already past max)",
             [S(QUIET + b"SUB foo 1\r\n" + pub("foo", "a") + pub("foo", "b") + b"UNSUB 1 1\r\n" + pub("foo", "c")
                + b"PING\r\n")]))
    add(Case("unsub_max_0", "SUB foo 1; UNSUB 1 0; PUB foo",
             [S(QUIET + b"SUB foo 1\r\nUNSUB 1 0\r\n" + pub("foo", "a") + b"PING\r\n")]))
    add(Case("unsub_then_pub", "SUB foo 1; UNSUB 1; PUB foo",
             [S(QUIET + b"SUB foo 1\r\nUNSUB 1\r\n" + pub("foo", "a") + b"PING\r\n")]))
    add(Case("unsub_auto_then_resub_same_sid", "SUB foo 1; UNSUB 1 1; PUB a; SUB foo 1; PUB b",
             [S(QUIET + b"SUB foo 1\r\nUNSUB 1 1\r\n" + pub("foo", "a") + b"SUB foo 1\r\n" + pub("foo", "b")
                + b"PING\r\n")]))

    # --- client sending server-only verbs --------------------------------------------------------------
    add(Case("client_sends_msg", "MSG foo 1 2 hi", [S("MSG foo 1 2\r\nhi\r\n")]))
    add(Case("client_sends_ok", "+OK then PING", [S("+OK\r\nPING\r\n")]))
    add(Case("client_sends_err", "-ERR 'x' then PING", [S("-ERR 'x'\r\nPING\r\n")]))
    add(Case("client_sends_pong", "PONG then PING", [S("PONG\r\nPING\r\n")]))
    add(Case("client_sends_info", "INFO {} then PING", [S("INFO {}\r\nPING\r\n")]))
    add(Case("client_sends_info_garbage", "INFO garbage then PING", [S("INFO garbage\r\nPING\r\n")]))
    add(Case("client_sends_hmsg", "HMSG foo 1 12 14", [S("HMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")]))

    # --- pedantic ---------------------------------------------------------------------------------------
    add(Case("pedantic_pub_wildcard", "pedantic (verbose default): SUB >; PUB foo.* 1",
             [S("CONNECT {\"pedantic\":true}\r\nSUB > 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")]))
    add(Case("pedantic_quiet_pub_wildcard", "pedantic, verbose false: SUB >; PUB foo.* 1",
             [S("CONNECT {\"pedantic\":true,\"verbose\":false}\r\nSUB > 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")]))
    add(Case("pedantic_pub_double_dot", "pedantic: PUB foo..bar 1",
             [S("CONNECT {\"pedantic\":true,\"verbose\":false}\r\nSUB > 1\r\nPUB foo..bar 1\r\nx\r\nPING\r\n")]))
    add(Case("pedantic_pub_gt", "pedantic: PUB foo.> 1",
             [S("CONNECT {\"pedantic\":true,\"verbose\":false}\r\nSUB > 1\r\nPUB foo.> 1\r\nx\r\nPING\r\n")]))
    add(Case("pedantic_pub_bad_reply", "pedantic: PUB foo bar.* 1 (wildcard reply)",
             [S("CONNECT {\"pedantic\":true,\"verbose\":false}\r\nSUB foo 1\r\nPUB foo bar.* 1\r\nx\r\nPING\r\n")]))
    add(Case("pedantic_sub_bad_subject", "pedantic: SUB foo..bar",
             [S("CONNECT {\"pedantic\":true,\"verbose\":false}\r\nSUB foo..bar 1\r\nPING\r\n")]))

    # --- headers ------------------------------------------------------------------------------------------
    h0 = b"NATS/1.0\r\n\r\n"
    add(Case("hpub_without_connect", "HPUB without any CONNECT", [S(hpub("foo", h0, "hi"))]))
    add(Case("hpub_headers_false", "CONNECT headers:false then HPUB",
             [S(QUIET + hpub("foo", h0, "hi"))]))
    add(Case("hpub_hdr_gt_total", "headers:true, HPUB with header size > total size",
             [S(HDR + b"HPUB foo 14 12\r\nNATS/1.0\r\n\r\nhi\r\n")]))
    add(Case("hpub_valid_self_sub", "headers:true, SUB foo 1, HPUB foo with multi-value header",
             [S(HDR + b"SUB foo 1\r\n" + hpub("foo", b"NATS/1.0\r\nA: 1\r\nA: 2\r\nB: x\r\n\r\n", "hi") + b"PING\r\n")]))
    add(Case("hpub_with_reply", "headers:true, SUB foo 1, HPUB foo rep ...",
             [S(HDR + b"SUB foo 1\r\n" + hpub("foo", h0, "hi", reply="rep") + b"PING\r\n")]))
    add(Case("hpub_too_few_args", "headers:true, HPUB foo 12", [S(HDR + b"HPUB foo 12\r\n")]))
    add(Case("hpub_too_many_args", "headers:true, HPUB foo a b 12 14", [S(HDR + b"HPUB foo a b 12 14\r\n")]))
    add(Case("hpub_bad_header_block", "headers:true, HPUB with header not starting NATS/1.0",
             [S(HDR + b"SUB foo 1\r\n" + hpub("foo", b"XX\r\n\r\n", "hi") + b"PING\r\n")]))
    add(Case("hpub_zero_header", "headers:true, HPUB foo 0 2 (hdr len 0)",
             [S(HDR + b"SUB foo 1\r\nHPUB foo 0 2\r\nhi\r\nPING\r\n")]))
    add(Case("hpub_empty_payload", "headers:true, HPUB with empty payload",
             [S(HDR + b"SUB foo 1\r\n" + hpub("foo", h0, "") + b"PING\r\n")]))
    add(Case("hpub_status_header", "headers:true, HPUB with status line NATS/1.0 503",
             [S(HDR + b"SUB foo 1\r\n" + hpub("foo", b"NATS/1.0 503\r\n\r\n", "") + b"PING\r\n")]))
    add(Case("hpub_max_payload_exceeded", "headers:true, HPUB total > max_payload",
             [S(HDR + b"HPUB foo 12 2000000\r\n")]))
    add(Case("lowercase_hpub", "headers:true, lower-case hpub",
             [S(HDR + b"sub foo 1\r\n" + hpub("foo", h0, "hi").replace(b"HPUB", b"hpub") + b"PING\r\n")]))
    add(Case("hpub_to_nonheader_sub", "conn0 headers:false SUB foo; conn1 headers:true HPUB foo (stripped?)",
             [S(QUIET + b"SUB foo 1\r\nPING\r\n", conn=0),
              S(HDR + hpub("foo", b"NATS/1.0\r\nA: 1\r\n\r\n", "hi") + b"PING\r\n", conn=1)], conns=2))
    add(Case("hpub_to_noconnect_sub", "conn0 no CONNECT SUB foo; conn1 headers:true HPUB foo",
             [S(b"SUB foo 1\r\nPING\r\n", conn=0),
              S(HDR + hpub("foo", b"NATS/1.0\r\nA: 1\r\n\r\n", "hi") + b"PING\r\n", conn=1)], conns=2))

    # --- no responders --------------------------------------------------------------------------------
    add(Case("no_responders_basic", "no_responders: SUB _INBOX.x.* 3, PUB svc.none _INBOX.x.1 2",
             [S(NR + b"SUB _INBOX.x.* 3\r\nPUB svc.none _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_quiet", "no_responders, verbose false",
             [S(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\n"
                b"SUB _INBOX.x.* 3\r\nPUB svc.none _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_reply_not_subscribed", "no_responders: PUB svc.none _INBOX.y.1 (no sub on reply)",
             [S(NR + b"SUB _INBOX.x.* 3\r\nPUB svc.none _INBOX.y.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_reply_sub_other_conn", "no_responders: reply subscribed only by another conn",
             [S(QUIET + b"SUB _INBOX.z.* 1\r\nPING\r\n", conn=0),
              S(NR + b"PUB svc.none _INBOX.z.1 2\r\nhi\r\nPING\r\n", conn=1)], conns=2))
    add(Case("no_responders_hpub", "no_responders: HPUB svc.none _INBOX.x.2 with header",
             [S(NR + b"SUB _INBOX.x.* 3\r\n" + hpub("svc.none", b"NATS/1.0\r\nK: v\r\n\r\n", "hi", reply="_INBOX.x.2")
                + b"PING\r\n")]))
    add(Case("no_responders_has_responder", "no_responders: a responder exists (own SUB svc)",
             [S(NR + b"SUB svc 1\r\nSUB _INBOX.x.* 3\r\nPUB svc _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_no_reply", "no_responders: PUB without reply, no subscriber",
             [S(NR + b"PUB svc.none 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_protocol0", "CONNECT headers+no_responders, protocol 0",
             [S(b"CONNECT {\"headers\":true,\"no_responders\":true}\r\nSUB _INBOX.x.* 3\r\n"
                b"PUB svc.none _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_off", "headers:true, no_responders absent: PUB svc.none _INBOX.x.1",
             [S(HDR + b"SUB _INBOX.x.* 3\r\nPUB svc.none _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))
    add(Case("no_responders_queue_only_sub", "no_responders: reply sub is a queue sub",
             [S(NR + b"SUB _INBOX.x.* q 3\r\nPUB svc.none _INBOX.x.1 2\r\nhi\r\nPING\r\n")]))

    # --- echo / multi-connection ----------------------------------------------------------------------
    add(Case("echo_false", "CONNECT echo:false, SUB foo, PUB foo",
             [S("CONNECT {\"echo\":false,\"verbose\":false}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n")]))
    add(Case("echo_false_other_conn", "conn0 echo:false SUB foo; conn1 PUB foo",
             [S("CONNECT {\"echo\":false,\"verbose\":false}\r\nSUB foo 1\r\nPING\r\n", conn=0),
              S(QUIET + pub("foo", "hi") + b"PING\r\n", conn=1)], conns=2))
    add(Case("queue_two_members", "conn0+conn1 SUB foo q (sid 1), conn1 also SUB foo (sid 2); conn1 PUB foo x20",
             [S(QUIET + b"SUB foo q 1\r\nPING\r\n", conn=0),
              S(QUIET + b"SUB foo q 1\r\nSUB foo 2\r\n" + b"".join(pub("foo", str(k)) for k in range(20))
                + b"PING\r\n", conn=1)], conns=2, summary=queue_summary))

    # --- auth (server started with --user a --pass b) -------------------------------------------------
    add(Case("auth_info_line", "server started with --user a --pass b: INFO", [], server_args=AUTH,
             show_info=True, final_window=0.5))
    add(Case("auth_ping_before_connect", "auth: PING before CONNECT", [S("PING\r\n")], server_args=AUTH))
    add(Case("auth_sub_before_connect", "auth: SUB before CONNECT", [S("SUB foo 1\r\n")], server_args=AUTH))
    add(Case("auth_wrong_password", "auth: CONNECT wrong password",
             [S("CONNECT {\"user\":\"a\",\"pass\":\"wrong\"}\r\nPING\r\n")], server_args=AUTH))
    add(Case("auth_no_credentials", "auth: CONNECT {} (no credentials)", [S("CONNECT {}\r\nPING\r\n")],
             server_args=AUTH))
    add(Case("auth_good_password", "auth: CONNECT correct user/pass then PING",
             [S("CONNECT {\"user\":\"a\",\"pass\":\"b\"}\r\nPING\r\n")], server_args=AUTH))
    add(Case("auth_good_password_quiet", "auth: CONNECT correct user/pass verbose false",
             [S("CONNECT {\"user\":\"a\",\"pass\":\"b\",\"verbose\":false}\r\nPING\r\n")], server_args=AUTH))
    add(Case("auth_idle_5s", "auth: connect and send nothing for 5s", [], server_args=AUTH, final_window=5.0))
    add(Case("auth_token_server", "server --auth tok: INFO and CONNECT auth_token",
             [S("CONNECT {\"auth_token\":\"tok\",\"verbose\":false}\r\nPING\r\n")], server_args=("--auth", "tok"),
             show_info=True))
    add(Case("auth_token_wrong", "server --auth tok: wrong token",
             [S("CONNECT {\"auth_token\":\"nope\"}\r\nPING\r\n")], server_args=("--auth", "tok")))
    return c


# ----------------------------------------------------------------------------- I/O
def read_info(sock: socket.socket, timeout: float = 5.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def collect(socks: list[socket.socket], window: float, closed: list[str | None]) -> list[bytes]:
    """Read from all still-open sockets for `window` seconds (all closed -> return early)."""
    data = [b""] * len(socks)
    deadline = time.monotonic() + window
    while True:
        live = [s for i, s in enumerate(socks) if closed[i] is None]
        left = deadline - time.monotonic()
        if not live or left <= 0:
            return data
        r, _, _ = select.select(live, [], [], left)
        if not r:
            return data
        for s in r:
            i = socks.index(s)
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                closed[i] = "RST"
                continue
            if not chunk:
                closed[i] = "EOF"
            else:
                data[i] += chunk


def fmt_bytes(b: bytes, limit: int = 600) -> str:
    if len(b) > limit:
        return f"{b[:200]!r} ... <{len(b)} bytes total> ... {b[-120:]!r}"
    return repr(b)


# ----------------------------------------------------------------------------- server
class Server:
    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.log = bytearray()
        self.port_evt = threading.Event()
        self.port: int | None = None
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()
        if not self.port_evt.wait(15) or self.port is None:
            self.stop()
            raise RuntimeError(f"server did not report its port: {argv}\n{self.log.decode(errors='replace')}")

    def _reader(self):
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.log += line
            if self.port is None:
                m = LISTEN_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                    self.port_evt.set()
        self.port_evt.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.t.join(2)


LOG_PREFIX_RE = re.compile(r"^\[\d+\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+ ")
LOG_ADDR_RE = re.compile(r"127\.0\.0\.1:\d+ - cid:\d+ - ")


def normalise_log(log: bytes) -> list[str]:
    """Connection-related log lines, with pid/timestamp/addr/cid removed."""
    out = []
    for line in log.decode(errors="replace").splitlines():
        line = LOG_PREFIX_RE.sub("", line)
        if " - cid:" not in line:
            continue
        line = LOG_ADDR_RE.sub("", line)
        if len(line) > 300:
            line = line[:300] + f"...<{len(line)} chars>"
        out.append(line)
    return out


# ----------------------------------------------------------------------------- running
def run_case(case: Case, cmd: list[str], opts) -> list[str]:
    out = [f"=== {case.name}", f"# {case.note}"]
    if case.server_args:
        out.append(f"server-args: {' '.join(case.server_args)}")
    srv = Server(cmd + ["-a", "127.0.0.1", "-p", "-1"] + list(case.server_args))
    socks: list[socket.socket] = []
    multi = case.conns > 1
    tag = (lambda i: f"[{i}]") if multi else (lambda i: "")
    try:
        closed: list[str | None] = [None] * case.conns
        for i in range(case.conns):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
            info = read_info(s)
            line, _, extra = info.partition(b"\r\n")
            if not info.startswith(b"INFO ") or not info.endswith(b"\r\n") and not extra:
                out.append(f"info{tag(i)}: UNEXPECTED {fmt_bytes(mask(info))}")
            elif case.show_info:
                shown = fmt_bytes(mask(line + CRLF), limit=4000)
                out.append(f"info{tag(i)}: {shown}")
            else:
                out.append(f"info{tag(i)}: <received>")
            if extra:
                out.append(f"after-info{tag(i)}: {fmt_bytes(mask(extra))}")

        totals = [b""] * case.conns

        def record(data: list[bytes]):
            for i, d in enumerate(data):
                totals[i] += d
            if case.summary:
                return
            for i, d in enumerate(data):
                if d or not multi:
                    out.append(f"recv{tag(i)}: {fmt_bytes(mask(d))}")

        t0 = time.monotonic()
        for n, st in enumerate(case.steps):
            out.append(f"send{tag(st.conn)}: {st.label or repr(st.data)}")
            if closed[st.conn] is None:
                try:
                    socks[st.conn].sendall(st.data)
                except (BrokenPipeError, ConnectionResetError) as e:
                    out.append(f"send-error{tag(st.conn)}: {type(e).__name__}")
            else:
                out.append(f"send-skipped{tag(st.conn)}: connection already closed")
            last = n == len(case.steps) - 1
            window = st.window if st.window is not None else (case.final_window if last else STEP_WINDOW)
            t0 = time.monotonic()
            record(collect(socks, window, closed))
        if not case.steps:
            t0 = time.monotonic()
            record(collect(socks, case.final_window, closed))
            if closed[0]:
                out.append(f"closed-after: ~{round(time.monotonic() - t0)}s")
        if case.summary:
            out.extend(case.summary(totals))
        for i, st in enumerate(closed):
            if st is None:
                out.append(f"conn{tag(i)}: open after {case.final_window:.1f}s")
            else:
                out.append(f"conn{tag(i)}: closed" + (f" ({st})" if opts.close_kind else ""))
    finally:
        for s in socks:
            s.close()
        alive = srv.alive()
        # give the server a moment to log the close of our connections
        time.sleep(0.05)
        srv.stop()
    if not alive:
        out.append("SERVER-DIED: yes")
    if opts.log_dir:
        with open(os.path.join(opts.log_dir, f"{case.name}.log"), "wb") as fh:
            fh.write(srv.log)
    if opts.with_log:
        for line in normalise_log(bytes(srv.log)):
            out.append(f"log: {line}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-cmd", required=True,
                    help="server command (shell-split), e.g. '.venv/bin/nats-server' or 'target/debug/rnats-server'; "
                         "'-a 127.0.0.1 -p -1' and per-case flags are appended")
    ap.add_argument("--extra-args", default="", help="extra flags for every server instance, e.g. --extra-args=-DV (use '=')")
    ap.add_argument("--log-dir", help="write each case's server log to DIR/<case>.log")
    ap.add_argument("--with-log", action="store_true",
                    help="append normalised server log lines (connection-related) to each block (use with -DV)")
    ap.add_argument("--close-kind", action="store_true", help="report EOF vs RST on close (timing dependent)")
    ap.add_argument("--only", action="append", help="run only cases whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list case names and exit")
    ap.add_argument("-j", "--jobs", type=int, default=12, help="cases run concurrently (default 12)")
    a = ap.parse_args()

    cases = build_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    if a.list:
        for c in cases:
            print(f"{c.name:45s} {c.note}")
        return 0
    if a.only:
        cases = [c for c in cases if any(o in c.name for o in a.only)]
    if a.log_dir:
        os.makedirs(a.log_dir, exist_ok=True)
    cmd = shlex.split(a.server_cmd) + shlex.split(a.extra_args)

    results: dict[str, list[str]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        futs = {c.name: ex.submit(run_case, c, cmd, a) for c in cases}
        for name, f in futs.items():
            try:
                results[name] = f.result()
            except Exception as e:  # report and keep going
                results[name] = [f"=== {name}", f"probe-error: {type(e).__name__}: {e}"]
    for c in cases:
        print("\n".join(results[c.name]))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
