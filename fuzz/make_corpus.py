#!/usr/bin/env python3
# Writes the seed inputs of fuzz/corpus/ (run from anywhere; overwrites them).
#
# Each seed is <sub-target byte> <parameter byte> <payload>, as read by
# LLVMFuzzerTestOneInput in pgwire_fuzz.cpp. The SCRAM seeds use the
# harness's fixed credential, so that one of them is a complete valid exchange.
import base64
import hashlib
import hmac
import os
import struct

STREAM, STARTUP, ERROR_FIELDS, SCRAM, SECRET, USERLIST, READERS, BASE64 = range(8)
MAX_1024 = 11  # index of 1024 in kMaxLengths
MAX_4096 = 12  # index of 4096 in kMaxLengths

PASSWORD = b"fuzz-password"
SALT = b"pgwarden-fuzzing"
ITERATIONS = 4096
SERVER_NONCE = "FuzzServerNonce0123456789"


def typed(kind, body):
    return kind + struct.pack("!I", 4 + len(body)) + body


def cstr(s):
    return s + b"\0"


def startup(params):
    body = struct.pack("!I", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", 4 + len(body)) + body


def b64(raw):
    return base64.b64encode(raw).decode()


salted = hashlib.pbkdf2_hmac("sha256", PASSWORD, SALT, ITERATIONS)
client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
stored_key = hashlib.sha256(client_key).digest()
server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
secret = f"SCRAM-SHA-256${ITERATIONS}:{b64(SALT)}${b64(stored_key)}:{b64(server_key)}"

client_first = "n,,n=,r=abc"
server_first = f"r=abc{SERVER_NONCE},s={b64(SALT)},i={ITERATIONS}"
without_proof = f"c={b64(b'n,,')},r=abc{SERVER_NONCE}"
auth_message = f"{client_first[3:]},{server_first},{without_proof}".encode()
proof = bytes(a ^ b for a, b in
              zip(client_key, hmac.new(stored_key, auth_message, hashlib.sha256).digest()))
client_final = f"{without_proof},p={b64(proof)}"

md5 = "md5" + hashlib.md5(b"secretalice").hexdigest()

seeds = {
    "stream-query": bytes([STREAM, MAX_1024]) + typed(b"Q", cstr(b"select 1")),
    "stream-extended": bytes([STREAM, MAX_1024]) +
    typed(b"P", cstr(b"s1") + cstr(b"select $1::int") + struct.pack("!hi", 1, 23)) +
    typed(b"B", cstr(b"") + cstr(b"s1") + struct.pack("!hhh", 1, 0, 1) + struct.pack("!i", 2) +
          b"42" + struct.pack("!h", 0)) +
    typed(b"E", cstr(b"") + struct.pack("!i", 0)) +
    typed(b"S", b""),
    "stream-backend-error": bytes([STREAM, MAX_4096]) +
    typed(b"E", b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0\0") +
    typed(b"Z", b"I"),
    "startup-v3": bytes([STARTUP, MAX_4096]) +
    startup([(b"user", b"alice"), (b"database", b"app"), (b"application_name", b"psql")]),
    "startup-sslrequest": bytes([STARTUP, MAX_4096]) + struct.pack("!II", 8, 80877103),
    "startup-cancel": bytes([STARTUP, MAX_4096]) + struct.pack("!IIii", 16, 80877102, 4242, -7),
    "errorfields": bytes([ERROR_FIELDS, 0]) + b"SERROR\0C42P01\0Mrelation does not exist\0\0",
    "scram-client-first": bytes([SCRAM, 0]) + client_first.encode(),
    "scram-exchange-valid": bytes([SCRAM, 0]) + f"{client_first}\0{client_final}".encode(),
    "scram-final-with-harness-proof": bytes([SCRAM, 1]) +
    f"{client_first}\0{without_proof}".encode(),
    "secret": bytes([SECRET, 0]) + secret.encode(),
    "userlist": bytes([USERLIST, 0]) +
    f'"alice" "{md5}"\n; a comment\n"bob" "{secret}"\n"carol" "pl""ain" trailing\n'.encode(),
    "readers": bytes([READERS, 0]) + cstr(b"name") + struct.pack("!hi", 2, 7),
    "base64": bytes([BASE64, 3]) + b"cGd3YXJkZW4=",
}

corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(corpus, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(corpus, name), "wb") as f:
        f.write(data)

# --- proxy_fuzz: what one client sends (byte 0 seeds the chunking) ----------------


def msg(kind, body=b""):
    return typed(kind, body)


def query(sql):
    return msg(b"Q", cstr(sql))


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) +
               b"".join(struct.pack("!I", t) for t in types))


def bind(portal, stmt, params=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    return msg(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def execute(portal, rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!i", rows))


SYNC = msg(b"S")
TERMINATE = msg(b"X")


def startup31(params):
    body = struct.pack("!I", 196609) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", 4 + len(body)) + body


def client(user, database, *rest, chunking=0):
    return bytes([chunking]) + startup([(b"user", user), (b"database", database)]) + b"".join(rest)


proxy_seeds = {
    "simple-query": client(b"app", b"db", query(b"SELECT 1"), TERMINATE),
    "simple-multi": client(b"app", b"db", query(b"BEGIN; SELECT 2; COMMIT"), query(b"SET search_path TO public"),
                           query(b"SELECT current_setting('search_path')"), TERMINATE, chunking=7),
    "extended-named": client(b"app", b"db", parse(b"s1", b"SELECT $1::int + 1", (23,)), bind(b"", b"s1", (b"41",)),
                             describe(b"P", b""), execute(b""), SYNC, bind(b"", b"s1", (b"1",)), execute(b""), SYNC,
                             msg(b"C", b"S" + cstr(b"s1")), SYNC, TERMINATE, chunking=3),
    "extended-duplicate": client(b"app", b"db", parse(b"d", b"SELECT 1"), parse(b"d", b"SELECT 2"), SYNC,
                                 bind(b"", b"d"), execute(b""), SYNC, TERMINATE),
    "extended-unnamed": client(b"app", b"db", parse(b"", b"SELECT $1::text", (25,)), bind(b"p", b"", (b"x",)),
                               describe(b"S", b""), execute(b"p", 1), msg(b"H"), SYNC, TERMINATE),
    "error-then-sync": client(b"app", b"db", parse(b"e", b"SELEC nonsense"), bind(b"", b"e"), execute(b""), SYNC,
                              query(b"SELECT 3"), TERMINATE),
    "copy-in": client(b"app", b"db", query(b"CREATE TEMP TABLE t(a int); COPY t FROM STDIN"), msg(b"d", b"1\n2\n"),
                      msg(b"c"), query(b"SELECT count(*) FROM t"), TERMINATE, chunking=5),
    "copy-out": client(b"app", b"db", query(b"COPY (SELECT generate_series(1, 100)) TO STDOUT"), TERMINATE),
    "session-mode": client(b"app", b"sess", query(b"SET application_name = 'x'"), query(b"SHOW application_name"),
                           TERMINATE),
    "admin-show": client(b"stats", b"pgwarden", query(b"SHOW POOLS"), query(b"SHOW CLIENTS"), query(b"SHOW STATS"),
                         query(b"SHOW CONFIG"), query(b"PAUSE"), TERMINATE),
    "sslrequest": bytes([0]) + struct.pack("!II", 8, 80877103) +
    startup([(b"user", b"app"), (b"database", b"db")]) + query(b"SELECT 1"),
    "gssencrequest": bytes([0]) + struct.pack("!II", 8, 80877104) +
    startup([(b"user", b"app"), (b"database", b"db")]),
    "cancel": bytes([0]) + struct.pack("!IIii", 16, 80877102, 1, 2),
    "md5-login": client(b"md5user", b"db", msg(b"p", cstr(b"md5" + b"0" * 32)), query(b"SELECT 1")),
    "scram-login": client(b"scramuser", b"db", msg(b"p", cstr(b"SCRAM-SHA-256") + struct.pack("!i", 32) +
                                                   b"n,,n=,r=abcdefghijklmnopqrstuvwx")),
    "unknown-db": client(b"app", b"nosuchdb", query(b"SELECT 1")),
    "huge-message": client(b"app", b"db", b"Q" + struct.pack("!I", 1 << 20) + b"SELECT"),
    "bad-type": client(b"app", b"db", msg(b"z", b"junk"), TERMINATE),
    "function-call": client(b"app", b"db", msg(b"F", struct.pack("!IhhIh", 1, 0, 0, 0, 0)), TERMINATE),
    # Session state: tracked parameters, what pins a client, what resets it.
    "session-state": client(b"app", b"db", query(b"SET search_path = pg_catalog, public; SET TimeZone = 'UTC'"),
                            query(b"SELECT set_config('statement_timeout', '5s', false)"), query(b"RESET ALL"),
                            query(b"CREATE TEMP TABLE tt (a int)"), query(b"LISTEN ch"),
                            query(b"SELECT pg_advisory_lock(1)"), query(b"DISCARD ALL"),
                            query(b"SELECT currval('s')"), TERMINATE, chunking=11),
    "prepared-effects": client(b"app", b"db", parse(b"r", b"RESET search_path"), bind(b"", b"r"), execute(b""),
                               SYNC, parse(b"w", b"SET work_mem = '1MB'"), bind(b"", b"w"), execute(b""), SYNC,
                               TERMINATE),
    "startup-options": bytes([0]) + startup([(b"user", b"app"), (b"database", b"db"),
                                             (b"options", b"-c statement_timeout=3s --search-path=x"),
                                             (b"application_name", b"caf\xc3\xa9")]) + query(b"SHOW search_path"),
    "protocol-3.1": bytes([0]) + startup31([(b"user", b"app"), (b"database", b"db"), (b"_pq_.fut", b"1")]) +
    query(b"SELECT 1"),
    "terminate-first": bytes([0]) + TERMINATE,
}

corpus_proxy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-proxy")
os.makedirs(corpus_proxy, exist_ok=True)
for name, data in proxy_seeds.items():
    with open(os.path.join(corpus_proxy, name), "wb") as f:
        f.write(data)
