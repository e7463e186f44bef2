#!/usr/bin/env python3
"""A scripted relay target for mailwarden's delivery tests (aiosmtpd).

Listens on loopback, on an ephemeral port unless --port is given, and prints
"PORT <n>" as its first line. Each accepted message becomes DIR/NNNNNN.eml
(the exact bytes received, after dot-unstuffing) and then DIR/NNNNNN.json
(envelope: mail_from, mail_options, rcpt_tos, rcpt_options, conn, seq); a
message is complete once its .json exists. Every RCPT and DATA answer is
appended to DIR/replies.log as "<conn> RCPT|DATA <address(es)> <reply>".

Replies are scripted with --rules, a JSON list applied in order, first match
wins; "times" limits how often a rule fires (0 or absent: always):

  [{"when": "rcpt", "match": "bounce@", "reply": "550 5.1.1 No such user"},
   {"when": "rcpt", "match": "later@", "reply": "451 4.3.0 Try again later", "times": 1},
   {"when": "data", "match": "slow@", "reply": "451 4.3.0 Not now", "times": 2},
   {"when": "data", "match": "crash@", "kill": "after_reply", "times": 1},
   {"when": "data", "match": "wait@", "delay": 2.0}]

"match" is a regular expression searched in the recipient address (for data
rules: in any accepted recipient). A "kill" rule stores the message, then
sends SIGKILL to the pid in --kill-pidfile: "before_reply" kills before the
250 is sent, "after_reply" right after it. A "delay" rule stores the
message, then waits that many seconds before its 250.

Usage: sink.py DIR [--host 127.0.0.X] [--port N] [--tls none|starttls|implicit --cert PEM --key PEM]
                   [--auth USER:PASS] [--no-8bitmime] [--no-smtputf8]
                   [--rules JSON] [--kill-pidfile FILE] [--discard]
"""
import argparse
import asyncio
import json
import os
import re
import signal
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    sys.exit("sink.py: aiosmtpd is missing (pip install aiosmtpd)")


class Handler:
    def __init__(self, args):
        self.args = args
        self.dir = args.dir
        os.makedirs(self.dir, exist_ok=True)
        self.seq = len([f for f in os.listdir(self.dir) if f.endswith(".json")])
        self.conns = 0
        self.rules = json.loads(args.rules) if args.rules else []
        for rule in self.rules:
            rule["re"] = re.compile(rule["match"])
            rule["fired"] = 0
        self.users = {}
        if args.auth:
            user, password = args.auth.split(":", 1)
            self.users[user.encode()] = password.encode()

    def rule(self, when, addresses):
        for rule in self.rules:
            if rule.get("when", "rcpt") != when:
                continue
            times = rule.get("times", 0)
            if times and rule["fired"] >= times:
                continue
            if any(rule["re"].search(a) for a in addresses):
                rule["fired"] += 1
                return rule
        return None

    def log(self, session, verb, what, reply):
        with open(os.path.join(self.dir, "replies.log"), "a") as f:
            f.write("%s %s %s %s\n" % (self.conn(session), verb, what, reply))

    def conn(self, session):
        if not hasattr(session, "sink_conn"):
            self.conns += 1
            session.sink_conn = self.conns
        return session.sink_conn

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and self.users.get(auth_data.login) == auth_data.password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.conn(session)
        if self.args.no_8bitmime:
            responses = [r for r in responses if r[4:] != "8BITMIME"]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rule = self.rule("rcpt", [address])
        reply = rule["reply"] if rule and "reply" in rule else "250 2.1.5 Ok"
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        self.log(session, "RCPT", address, reply)
        return reply

    async def handle_DATA(self, server, session, envelope):
        rule = self.rule("data", envelope.rcpt_tos)
        if rule and "reply" in rule:
            self.log(session, "DATA", ",".join(envelope.rcpt_tos), rule["reply"])
            return rule["reply"]
        self.seq += 1
        qid = "%06d" % self.seq
        if self.args.discard:
            return "250 2.0.0 Ok: queued as %s" % qid
        base = os.path.join(self.dir, qid)
        data = envelope.original_content or b""
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(base + ".eml.tmp", base + ".eml")
        meta = {
            "seq": self.seq,
            "conn": self.conn(session),
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "size": len(data),
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(base + ".json.tmp", base + ".json")
        reply = "250 2.0.0 Ok: queued as %s" % qid
        self.log(session, "DATA", ",".join(envelope.rcpt_tos), reply)
        print("sink: #%s from=<%s> to=%s" % (qid, envelope.mail_from, ",".join(envelope.rcpt_tos)), flush=True)
        if rule and rule.get("delay"):
            await asyncio.sleep(rule["delay"])
        if rule and rule.get("kill"):
            if rule["kill"] == "before_reply":
                self.kill()
            else:
                asyncio.get_running_loop().call_soon(self.kill)
        return reply

    def kill(self):
        try:
            with open(self.args.kill_pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGKILL)
            print("sink: killed %d" % pid, flush=True)
        except (OSError, ValueError, TypeError) as e:
            print("sink: kill failed: %s" % e, flush=True)


async def main(args):
    handler = Handler(args)
    loop = asyncio.get_running_loop()
    ctx = None
    if args.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    def factory():
        return SMTP(
            handler,
            hostname="relay.test",
            ident="test-relay",
            loop=loop,
            enable_SMTPUTF8=not args.no_smtputf8,
            tls_context=ctx if args.tls == "starttls" else None,
            require_starttls=args.tls == "starttls",
            auth_required=bool(handler.users),
            auth_require_tls=args.tls == "starttls",
            authenticator=handler.authenticator,
            timeout=60,
        )

    server = await loop.create_server(
        factory, args.host, args.port, ssl=ctx if args.tls == "implicit" else None
    )
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1", help="a loopback address to listen on")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--no-8bitmime", action="store_true")
    p.add_argument("--no-smtputf8", action="store_true")
    p.add_argument("--rules")
    p.add_argument("--kill-pidfile")
    p.add_argument("--discard", action="store_true", help="accept without storing (load tests)")
    args = p.parse_args()
    if args.tls != "none" and not (args.cert and args.key):
        p.error("--tls needs --cert and --key")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
