# The differential corpus for psycopg2: named client sessions, each step printed as one JSON line.
#
# Usage: differential.py HOST PORT DBNAME USER PASSWORD (or PGW_HOST, PGW_PORT, PGW_DBNAME,
# PGW_USER, PGW_PASSWORD in the environment). Needs the tables of proxy_differential_test.cpp
# (public.t, diff_s1.t, diff_s1.only_s1, diff_s2.t, diff_copy, the sequence diff_seq_py).
#
# Every session is one connection (autocommit: transactions are the corpus's own BEGIN/COMMIT).
# Per step the transcript has the statement, ok or SQLSTATE and message, column names, rows as
# the server's text, the command tag and rowcount, notices, notifications (channel, payload),
# COPY TO output, and the parameters libpq last heard in ParameterStatus. Values that differ by
# nature (backend PIDs, timestamps of now, pg_stat_activity, client ports) are never selected.
#
# A step may carry "diff": a difference the README documents for transaction pooling. The test
# accepts, on that step only and only in transaction mode, the named alternative result.
import faulthandler
import io
import json
import os
import sys

import psycopg2
import psycopg2.extensions

STEP_TIMEOUT_S = 30  # a step that hangs ends the script (exit code 3) with a traceback

# Rows as the server's text: every type psycopg2 would convert is returned unconverted.
psycopg2.extensions.register_type(
    psycopg2.extensions.new_type(
        tuple(psycopg2.extensions.string_types.keys()), "DIFF_RAW", lambda value, cur: value
    )
)

REPORTED = [
    "TimeZone",
    "DateStyle",
    "client_encoding",
    "standard_conforming_strings",
    "application_name",
    "IntervalStyle",
]

# Given in the startup packet (application_name, and -c options).
STARTUP = {
    "application_name": "diff_py",
    "TimeZone": "Asia/Tokyo",
    "IntervalStyle": "postgres_verbose",
}

# A fresh server connection's values (the test fixes them with ALTER DATABASE ... SET).
SERVER_DEFAULT = {
    "application_name": "",
    "TimeZone": "Etc/UTC",
    "IntervalStyle": "postgres",
}

# What a session can see of state others may have left on its server connection.
LEAKS = (
    "SELECT to_regclass('noise_tmp') IS NULL AS no_noise_tmp,"
    " to_regclass('noise_keep') IS NULL AS no_noise_keep,"
    " (SELECT count(*) FROM pg_listening_channels()) AS listening,"
    " (SELECT count(*) FROM pg_cursors) AS cursors,"
    " (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS sql_prepared,"
    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
    " AS advisory_locks,"
    " current_setting('search_path') AS search_path,"
    " current_setting('statement_timeout') AS statement_timeout,"
    " current_setting('lock_timeout') AS lock_timeout,"
    " current_setting('extra_float_digits') AS extra_float_digits,"
    " current_setting('default_transaction_read_only') AS read_only"
)
OWN_LOCKS = (
    "SELECT objid, mode, granted FROM pg_locks"
    " WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY objid, mode"
)
STATEMENTS = "SELECT name, from_sql, statement FROM pg_prepared_statements ORDER BY name"
TS = "SELECT TIMESTAMPTZ '2021-03-04 05:06:07+00' AS ts"
DATE = "SELECT DATE '2021-03-04' AS d"
IV = "SELECT INTERVAL '1 day 02:03:04' AS iv"


def startup_reset(*names, rows=None, ends=False):
    """(2): after RESET / RESET ALL / DISCARD ALL / set_config(name, NULL, false) a startup
    parameter shows the server's default for the rest of that same query string (in both pooling
    modes); from the next query on the startup value again. The alternative: each named
    parameter reads its server default in the cells (the rows are `rows` when given); with
    `ends`, ParameterStatus already shows the startup value again."""
    diff = {
        "kind": "startup_param_reset",
        "reason": "(2) after RESET/RESET ALL/DISCARD ALL a startup parameter shows the server's"
        " default for the rest of that query string",
        "params": {n: {"startup": STARTUP[n], "default": SERVER_DEFAULT[n]} for n in names},
    }
    if rows is not None:
        diff["rows"] = rows
    if ends:
        diff["ends_transaction"] = True
    return diff


ALL_STARTUP = tuple(STARTUP)


def seq_undefined(message):
    """(3): currval()/lastval() in a later transaction than the nextval() that set them."""
    return {
        "kind": "sequence_cache",
        "reason": "(3) currval()/lastval() in a later transaction than nextval() may be undefined",
        "sqlstate": "55000",
        "message": message,
    }


PROXY_STATEMENTS = {
    "kind": "proxy_statements",
    "reason": "(4) pg_prepared_statements lists the proxy's shared statements (pgw_...)",
}


def q(sql, args=None, diff=None):
    return {"kind": "sql", "sql": sql, "args": args, "diff": diff}


def copy_in(sql, data):
    return {"kind": "copy_in", "sql": sql, "data": data}


def copy_out(sql):
    return {"kind": "copy_out", "sql": sql}


def poll():
    return {"kind": "poll", "sql": "(conn.poll)"}


SESSIONS = [
    (
        "basics",
        [
            q(LEAKS),
            q("SELECT 1 AS one, 'two' AS two, NULL AS nothing"),
            q(
                r"SELECT 'a\b' AS backslash, E'tab\there' AS escaped, 'é€ü' AS utf8,"
                r" length('é€ü') AS chars, octet_length('é€ü') AS bytes"
            ),
            q(
                "SELECT DATE '2021-03-04' AS d, TIMESTAMPTZ '2021-03-04 05:06:07+00' AS ts,"
                " INTERVAL '1 day 02:03:04' AS iv, 1.234567890123::float8 AS f,"
                " 0.1::float8 + 0.2::float8 AS f2"
            ),
            q("SHOW application_name"),
            q("SHOW TimeZone"),
            q("SHOW IntervalStyle"),
            q("SHOW DateStyle"),
            q("SHOW client_encoding"),
            q("SHOW standard_conforming_strings"),
            q("SELECT current_setting('transaction_read_only') AS ro"),
            q("SELECT id, label FROM t ORDER BY id"),
            q("SELECT current_user, session_user, current_database(), current_schema()"),
            q("SELECT %s::int + %s::int AS sum, %s AS quoted", (40, 2, "it's a \\ test")),
            q("SELECT 1 AS a; SELECT 2 AS b"),
            q("SELECT g, g * 2 AS twice FROM generate_series(1, 3) g"),
            q("SELECT pg_sleep(0.3)"),
            q("SELECT 'after sleep' AS v"),
            q("BEGIN"),
            q("SELECT label FROM t ORDER BY id"),
            q("SHOW TimeZone"),
            q("COMMIT"),
            q(""),
            q("-- only a comment"),
            q(LEAKS),
        ],
    ),
    (
        "set_reset",
        [
            q("SHOW TimeZone"),
            q("SET TimeZone = 'UTC'"),
            q("SHOW TimeZone"),
            q(TS),
            q("RESET TimeZone"),
            q("SHOW TimeZone"),
            q(TS),
            q("SET DateStyle = 'German'"),
            q(DATE),
            q("RESET DateStyle"),
            q(DATE),
            q("SET application_name = 'py_changed'"),
            q("SHOW application_name"),
            q("RESET application_name"),
            q("SHOW application_name"),
            q("SET IntervalStyle = 'iso_8601'"),
            q(IV),
            q("SET intervalstyle TO DEFAULT"),
            q(IV),
            q("SET search_path = diff_s1"),
            q("SELECT label FROM t ORDER BY id"),
            q("RESET search_path"),
            q("SELECT label FROM t ORDER BY id"),
            q("SET extra_float_digits = 0"),
            q("SELECT 1.234567890123::float8 AS f"),
            q("RESET extra_float_digits"),
            q("SELECT 1.234567890123::float8 AS f"),
            q("SET TimeZone = 'Europe/Berlin'"),
            q("SET DateStyle = 'SQL, DMY'"),
            q("SET application_name = 'before_reset_all'"),
            q("SET IntervalStyle = 'sql_standard'"),
            q("RESET ALL"),
            q("SHOW TimeZone"),
            q("SHOW DateStyle"),
            q("SHOW application_name"),
            q("SHOW IntervalStyle"),
            q("SET SESSION TimeZone = 'America/Denver'"),
            q("SHOW TimeZone"),
            q("SET TimeZone TO DEFAULT"),
            q("SHOW TimeZone"),
            q("SET TIME ZONE 'Pacific/Auckland'"),
            q(TS),
            q("SET TIME ZONE LOCAL"),
            q(TS),
            q("SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE"),
            q("SHOW TimeZone"),
            q("RESET TIME ZONE"),
            q("SHOW TimeZone"),
            q("SET TimeZone = 'No/Such_Zone'"),
            q("SHOW TimeZone"),
            q("SET no_such_parameter = 1"),
            q("SET application_name = 'x'; SET TimeZone = 'UTC'; SELECT 'two sets' AS v"),
            q("SHOW application_name"),
            q("SHOW TimeZone"),
            q("RESET TimeZone; RESET application_name"),
            q("SHOW TimeZone"),
            q(LEAKS),
        ],
    ),
    (
        "set_local_and_rollback",
        [
            q("BEGIN"),
            q("SET LOCAL TimeZone = 'UTC'"),
            q("SHOW TimeZone"),
            q("COMMIT"),
            q("SHOW TimeZone"),
            q("BEGIN"),
            q("SET TimeZone = 'Europe/Berlin'"),
            q("SHOW TimeZone"),
            q("ROLLBACK"),
            q("SHOW TimeZone"),
            q("BEGIN"),
            q("SET application_name = 'rolled_back'"),
            q("ROLLBACK"),
            q("SHOW application_name"),
            q("BEGIN"),
            q("SET TimeZone = 'Europe/Berlin'"),
            q("SAVEPOINT s1"),
            q("SET TimeZone = 'Asia/Kolkata'"),
            q("SHOW TimeZone"),
            q("ROLLBACK TO SAVEPOINT s1"),
            q("SHOW TimeZone"),
            q("RELEASE SAVEPOINT s1"),
            q("COMMIT"),
            q("SHOW TimeZone"),
            q("RESET TimeZone"),
            q("BEGIN"),
            q("SET search_path = diff_s2"),
            q("SELECT label FROM t ORDER BY id"),
            q("ROLLBACK"),
            q("SELECT label FROM t ORDER BY id"),
            q("BEGIN"),
            q("SET statement_timeout = '50ms'"),
            q("ROLLBACK"),
            q("SELECT pg_sleep(0.2)"),
            q("BEGIN"),
            q("SET LOCAL search_path = diff_s1"),
            q("SELECT label FROM t ORDER BY id"),
            q("COMMIT"),
            q("SELECT label FROM t ORDER BY id"),
            q("BEGIN"),
            q("SET TimeZone = 'UTC'"),
            q("SELECT 1 / 0"),
            q("ROLLBACK"),
            q("SHOW TimeZone"),
            q("BEGIN"),
            q("SET TimeZone = 'UTC'"),
            q("COMMIT"),
            q("SHOW TimeZone"),
            q("RESET TimeZone"),
            q("SET LOCAL TimeZone = 'UTC'"),
            q("SHOW TimeZone"),
            q("BEGIN; SET LOCAL DateStyle = 'German'; SELECT DATE '2021-03-04' AS d; COMMIT"),
            q(DATE),
            q(LEAKS),
        ],
    ),
    (
        "reset_in_transaction",
        [
            q("BEGIN"),
            q("RESET TimeZone"),
            q("SHOW TimeZone"),
            q(TS),
            q("COMMIT"),
            q("SHOW TimeZone"),
            q(TS),
            q("BEGIN"),
            q("RESET ALL"),
            q("SHOW application_name"),
            q("SHOW IntervalStyle"),
            q(IV),
            q("COMMIT"),
            q("SHOW application_name"),
            q("SHOW IntervalStyle"),
            q("BEGIN"),
            q("SET TimeZone = 'UTC'"),
            q("RESET TimeZone"),
            q("SHOW TimeZone"),
            q("COMMIT"),
            q("SHOW TimeZone"),
            q("BEGIN"),
            q("SET application_name = 'x'"),
            q("SET application_name TO DEFAULT"),
            q("SHOW application_name"),
            q("ROLLBACK"),
            q("SHOW application_name"),
            q("SET TimeZone = 'UTC'"),
            q("DISCARD ALL"),
            q("SHOW TimeZone"),
            q("SHOW application_name"),
            q("SHOW IntervalStyle"),
            q("RESET ALL"),
            q("SHOW TimeZone"),
            q("RESET TimeZone; SELECT current_setting('TimeZone') AS tz",
              diff=startup_reset("TimeZone", ends=True)),
            q("SHOW TimeZone"),
            q(LEAKS),
        ],
    ),
    (
        "set_config",
        [
            q("SELECT set_config('TimeZone', 'UTC', false) AS v"),
            q("SHOW TimeZone"),
            q("BEGIN"),
            q("SELECT set_config('application_name', 'local_via_set_config', true) AS v"),
            q("SHOW application_name"),
            q("COMMIT"),
            q("SHOW application_name"),
            q("SELECT set_config('search_path', 'diff_s2', false) AS v"),
            q("SELECT label FROM t ORDER BY id"),
            q("SELECT set_config('statement_timeout', '100ms', false) AS v"),
            q("SELECT pg_sleep(2)"),
            q("SELECT set_config('statement_timeout', '0', false) AS v"),
            q("SELECT pg_sleep(0.2)"),
            q("BEGIN"),
            q("SELECT set_config('TimeZone', 'Europe/Berlin', false) AS v"),
            q("ROLLBACK"),
            q("SHOW TimeZone"),
            q(
                "SELECT set_config('IntervalStyle', 'sql_standard', false) AS a,"
                " set_config('DateStyle', 'SQL, DMY', false) AS b"
            ),
            q("SELECT DATE '2021-03-04' AS d, INTERVAL '1 day 02:03:04' AS iv"),
            q("SELECT set_config('TimeZone', NULL, false)",
              diff=startup_reset("TimeZone", rows=[[SERVER_DEFAULT["TimeZone"]]], ends=True)),
            q("SELECT current_setting('diff.absent', true) AS v"),
            q("SELECT current_setting('diff.absent') AS v"),
            q("SELECT set_config('diff.custom', 'custom-1', false) AS v"),
            q("SELECT current_setting('diff.custom') AS v"),
            q("BEGIN"),
            q("SELECT current_setting('diff.custom') AS v"),
            q("COMMIT"),
            q("SELECT set_config(n, 'dyn', false) AS v FROM (VALUES ('diff.dynamic')) AS x(n)"),
            q("SELECT current_setting('diff.dynamic') AS v"),
            q("RESET ALL"),
            q("SHOW TimeZone"),
            q("SELECT current_setting('diff.custom') AS v"),
            q(LEAKS),
        ],
    ),
    (
        "statement_timeout",
        [
            q("SET statement_timeout = '100ms'"),
            q("SHOW statement_timeout"),
            q("SELECT pg_sleep(2)"),
            q("SELECT 'still connected' AS v"),
            q("BEGIN"),
            q("SELECT pg_sleep(2)"),
            q("SELECT 1"),
            q("ROLLBACK"),
            q("RESET statement_timeout"),
            q("SELECT pg_sleep(0.3)"),
            q("BEGIN"),
            q("SET LOCAL statement_timeout = '100ms'"),
            q("SELECT pg_sleep(2)"),
            q("ROLLBACK"),
            q("SELECT pg_sleep(0.3)"),
            q("SET statement_timeout = '5s'"),
            q("SELECT pg_sleep(0.3)"),
            q("SET lock_timeout = '1s'"),
            q("SHOW lock_timeout"),
            q("RESET statement_timeout"),
            q(LEAKS),
        ],
    ),
    (
        "errors",
        [
            q("SELEC 1"),
            q("SELECT 1 / 0"),
            q("SELECT * FROM diff_missing"),
            q("SELECT 'x'::int"),
            q("BEGIN"),
            q("SELECT 1"),
            q("SELECT 1 / 0"),
            q("SELECT 2"),
            q("COMMIT"),
            q("SELECT 'after' AS v"),
            q("BEGIN"),
            q("SAVEPOINT a"),
            q("SELECT nosuch"),
            q("ROLLBACK TO SAVEPOINT a"),
            q("SELECT 'recovered' AS v"),
            q("COMMIT"),
            q("COMMIT"),
            q("ROLLBACK"),
            q("BEGIN"),
            q("BEGIN"),
            q("COMMIT"),
            q("SELECT 1; SELECT 1 / 0; SELECT 3"),
            q("SELECT 'after multi' AS v"),
            q("BEGIN; SELECT 1 / 0"),
            q("SELECT 1"),
            q("ROLLBACK"),
            q("DO $$ BEGIN RAISE NOTICE 'notice from do %', 42; RAISE WARNING 'warning'; END $$"),
            q("DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END $$"),
            q("SELECT 'end' AS v"),
            q(LEAKS),
        ],
    ),
    (
        "sql_prepare",
        [
            q("PREPARE bad AS SELECT nosuch"),
            q("PREPARE bad(int) AS SELECT $1 + 1 AS next"),
            q("EXECUTE bad(41)"),
            q("PREPARE bad AS SELECT 2"),
            q(STATEMENTS, diff=PROXY_STATEMENTS),
            q("BEGIN"),
            q("EXECUTE bad(1)"),
            q("COMMIT"),
            q("EXECUTE bad(2)"),
            q("DEALLOCATE bad"),
            q("EXECUTE bad(1)"),
            q("PREPARE p2(text) AS SELECT $1 || '!' AS shout"),
            q("EXECUTE p2('hi')"),
            q("DEALLOCATE PREPARE p2"),
            q("PREPARE p3 AS SELECT 3 AS three"),
            q("PREPARE p4 AS SELECT 4 AS four"),
            q(STATEMENTS, diff=PROXY_STATEMENTS),
            q("DEALLOCATE ALL"),
            q("EXECUTE p3"),
            q(STATEMENTS, diff=PROXY_STATEMENTS),
            q("BEGIN"),
            q("PREPARE in_tx AS SELECT 'in tx' AS v"),
            q("ROLLBACK"),
            q("EXECUTE in_tx"),
            q("PREPARE ins(int, text) AS INSERT INTO diff_copy VALUES ($1, $2)"),
            q("BEGIN"),
            q("EXECUTE ins(1, 'one')"),
            q("SELECT count(*) FROM diff_copy"),
            q("ROLLBACK"),
            q("SELECT count(*) FROM diff_copy"),
            q(LEAKS),
        ],
    ),
    (
        "cursors",
        [
            q("BEGIN"),
            q("DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 5) g"),
            q("FETCH 2 FROM c"),
            q("FETCH NEXT FROM c"),
            q("FETCH ALL FROM c"),
            q("FETCH 1 FROM c"),
            q("CLOSE c"),
            q("COMMIT"),
            q("DECLARE nohold CURSOR FOR SELECT 1"),
            q("DECLARE h CURSOR WITH HOLD FOR SELECT g, g * g AS sq FROM generate_series(1, 4) g"),
            q("FETCH 1 FROM h"),
            q("MOVE 1 IN h"),
            q("SELECT name, statement, is_holdable, is_scrollable FROM pg_cursors ORDER BY name"),
            q("FETCH ALL FROM h"),
            q("CLOSE h"),
            q("FETCH 1 FROM h"),
            q("BEGIN"),
            q("DECLARE s SCROLL CURSOR FOR SELECT g FROM generate_series(1, 3) g"),
            q("FETCH LAST FROM s"),
            q("FETCH PRIOR FROM s"),
            q("FETCH ABSOLUTE 1 FROM s"),
            q("COMMIT"),
            q("BEGIN"),
            q("DECLARE h2 CURSOR WITH HOLD FOR SELECT 'held' AS v"),
            q("ROLLBACK"),
            q("FETCH 1 FROM h2"),
            q("BEGIN"),
            q("DECLARE h3 CURSOR WITH HOLD FOR SELECT 'held' AS v"),
            q("COMMIT"),
            q("FETCH ALL FROM h3"),
            q("CLOSE ALL"),
            q(LEAKS),
        ],
    ),
    (
        "temp_tables",
        [
            q(LEAKS),
            q("CREATE TEMP TABLE tt (id int PRIMARY KEY, v text)"),
            q("INSERT INTO tt VALUES (1, 'a'), (2, 'b')"),
            q("SELECT * FROM tt ORDER BY id"),
            copy_in("COPY tt FROM STDIN", "3\tc\n4\td\n"),
            copy_out("COPY (SELECT * FROM tt ORDER BY id) TO STDOUT"),
            copy_out("COPY tt TO STDOUT WITH (FORMAT csv, HEADER)"),
            copy_in("COPY tt FROM STDIN", "5\te\nx\tf\n"),
            copy_in("COPY tt FROM STDIN", "1\tdup\n"),
            q("SELECT count(*) FROM tt"),
            q("BEGIN"),
            q("CREATE TEMP TABLE tc (x int) ON COMMIT DROP"),
            q("INSERT INTO tc VALUES (1), (2)"),
            q("SELECT count(*) FROM tc"),
            q("COMMIT"),
            q("SELECT count(*) FROM tc"),
            q("CREATE TEMP TABLE tdel (x int) ON COMMIT DELETE ROWS"),
            q("BEGIN"),
            q("INSERT INTO tdel VALUES (1)"),
            q("SELECT count(*) FROM tdel"),
            q("COMMIT"),
            q("SELECT count(*) FROM tdel"),
            q("SELECT * FROM pg_temp.tt ORDER BY id LIMIT 1"),
            q("CREATE TEMP SEQUENCE tseq"),
            q("SELECT nextval('tseq')"),
            q("SELECT currval('tseq')"),
            q("CREATE TEMP VIEW tv AS SELECT v FROM tt"),
            q("SELECT * FROM tv ORDER BY v"),
            q("BEGIN"),
            q("CREATE TEMP TABLE trolled (x int)"),
            q("ROLLBACK"),
            q("SELECT * FROM trolled"),
            q("DISCARD TEMP"),
            q("SELECT count(*) FROM tt"),
            q("SELECT * FROM tv"),
            q(LEAKS),
        ],
    ),
    (
        "copy_permanent",
        [
            q("BEGIN"),
            copy_in("COPY diff_copy (id, label) FROM STDIN", "1\tone\n2\ttwo\n3\t\\N\n"),
            q("SELECT count(*), sum(id), count(label) FROM diff_copy"),
            copy_out("COPY diff_copy TO STDOUT WITH (FORMAT csv)"),
            q("ROLLBACK"),
            q("SELECT count(*) FROM diff_copy"),
            copy_out(
                "COPY (SELECT id, label FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
            ),
            copy_out(r"COPY (SELECT 'é€ü', E'tab\there', NULL) TO STDOUT"),
            copy_in(
                "COPY diff_copy FROM STDIN WITH (FORMAT csv)", '1,"quoted, comma"\n2,oops,extra\n'
            ),
            q("SELECT count(*) FROM diff_copy"),
            q("BEGIN"),
            copy_in("COPY diff_copy FROM STDIN", "not a number\tx\n"),
            q("SELECT 1"),
            q("ROLLBACK"),
            copy_out("COPY diff_missing TO STDOUT"),
            copy_in("COPY diff_copy FROM STDIN", ""),
            q(LEAKS),
        ],
    ),
    (
        "listen",
        [
            q("LISTEN diff_chan"),
            q("NOTIFY diff_chan, 'hello'"),
            q("SELECT pg_notify('diff_chan', 'from pg_notify') AS v"),
            q("BEGIN"),
            q("NOTIFY diff_chan, 'in tx'"),
            q("NOTIFY diff_chan, 'in tx'"),
            q("NOTIFY diff_chan, 'second'"),
            q("COMMIT"),
            q("BEGIN"),
            q("NOTIFY diff_chan, 'rolled back'"),
            q("ROLLBACK"),
            poll(),
            q("SELECT * FROM pg_listening_channels()"),
            q("BEGIN"),
            q("LISTEN diff_other"),
            q("ROLLBACK"),
            q("SELECT * FROM pg_listening_channels()"),
            q('LISTEN "Diff Quoted"'),
            q("NOTIFY \"Diff Quoted\", 'q'"),
            q("UNLISTEN diff_chan"),
            q("NOTIFY diff_chan, 'unheard'"),
            poll(),
            q("SELECT * FROM pg_listening_channels() ORDER BY 1"),
            q("UNLISTEN *"),
            q("SELECT count(*) FROM pg_listening_channels()"),
            q(LEAKS),
        ],
    ),
    (
        "advisory",
        [
            q(OWN_LOCKS),
            q("SELECT pg_advisory_lock(1001)"),
            q("SELECT pg_try_advisory_lock(1001)"),
            q(OWN_LOCKS),
            q("SELECT pg_advisory_unlock(1001)"),
            q("SELECT pg_advisory_unlock(1001)"),
            q("SELECT pg_advisory_unlock(1001)"),
            q("SELECT pg_advisory_lock_shared(1003)"),
            q(OWN_LOCKS),
            q("SELECT pg_advisory_unlock_shared(1003)"),
            q("BEGIN"),
            q("SELECT pg_advisory_xact_lock(1002)"),
            q("SELECT pg_try_advisory_xact_lock(1004)"),
            q(OWN_LOCKS),
            q("COMMIT"),
            q(OWN_LOCKS),
            q("SELECT pg_advisory_lock(1005), pg_advisory_lock(1006)"),
            q("SELECT pg_advisory_unlock_all()"),
            q(OWN_LOCKS),
            q("SELECT pg_advisory_lock(1007)"),
            q(LEAKS),
        ],
    ),
    (
        "sequences",
        [
            q("SELECT currval('diff_seq_py')"),
            q("SELECT lastval()"),
            q("SELECT nextval('diff_seq_py')"),
            q(
                "SELECT currval('diff_seq_py')",
                diff=seq_undefined('currval of sequence "diff_seq_py" is not yet defined in this'
                                   " session"),
            ),
            q("SELECT lastval()", diff=seq_undefined("lastval is not yet defined in this session")),
            q("BEGIN"),
            q("SELECT nextval('diff_seq_py')"),
            q("SELECT currval('diff_seq_py')"),
            q("SELECT lastval()"),
            q("COMMIT"),
            q(
                "SELECT currval('diff_seq_py')",
                diff=seq_undefined('currval of sequence "diff_seq_py" is not yet defined in this'
                                   " session"),
            ),
            q("SELECT nextval('diff_seq_py'), currval('diff_seq_py')"),
            q("SELECT setval('diff_seq_py', 10)"),
            q("SELECT nextval('diff_seq_py')"),
            q("DISCARD SEQUENCES"),
            q("SELECT currval('diff_seq_py')"),
            q(LEAKS),
        ],
    ),
    (
        "search_path",
        [
            q("SHOW search_path"),
            q("SELECT label FROM t ORDER BY id"),
            q("SET search_path = diff_s1"),
            q("SELECT label FROM t ORDER BY id"),
            q("SELECT label FROM only_s1"),
            q("SELECT current_schemas(false)"),
            q("SET search_path = diff_s2, diff_s1"),
            q("SELECT label FROM t ORDER BY id"),
            q("SELECT label FROM only_s1"),
            q("SELECT current_schema()"),
            q("BEGIN"),
            q("SET LOCAL search_path = public"),
            q("SELECT label FROM t ORDER BY id"),
            q("COMMIT"),
            q("SELECT label FROM t ORDER BY id"),
            q("SET search_path = ''"),
            q("SELECT label FROM t"),
            q("SELECT label FROM public.t ORDER BY id LIMIT 1"),
            q('SET search_path = "$user", public'),
            q("SHOW search_path"),
            q("SET search_path TO diff_s1, public"),
            q("CREATE TEMP TABLE t (id int, label text)"),
            q("INSERT INTO t VALUES (9, 'temp')"),
            q("SELECT label FROM t ORDER BY id"),
            q("SET search_path = diff_s1, pg_temp"),
            q("SELECT label FROM t ORDER BY id"),
            q("RESET search_path"),
            q("SHOW search_path"),
            q(LEAKS),
        ],
    ),
    (
        "encoding",
        [
            q("SHOW client_encoding"),
            q("SET client_encoding = 'LATIN1'"),
            q("SHOW client_encoding"),
            q("SELECT 'é' AS e_acute, length('é') AS chars"),
            q("SELECT chr(8364) AS euro"),
            q("RESET client_encoding"),
            q("SELECT 'é€ü' AS v, chr(8364) AS euro"),
            q("SET NAMES 'UTF8'"),
            q("SHOW client_encoding"),
            q("SET standard_conforming_strings = off"),
            q(r"SELECT 'a\\b' AS v"),
            q("SHOW standard_conforming_strings"),
            q("SELECT %s AS quoted", ("back\\slash 'q'",)),
            q(r"SELECT E'x\\y' AS e, 'it''s' AS s"),
            q("RESET standard_conforming_strings"),
            q(r"SELECT 'a\\b' AS v"),
            q("SELECT %s AS quoted", ("back\\slash 'q'",)),
            q(LEAKS),
        ],
    ),
    (
        "discard_all",
        [
            q("SET TimeZone = 'UTC'"),
            q("SET search_path = diff_s2"),
            q("CREATE TEMP TABLE d (x int)"),
            q("PREPARE dp AS SELECT 1"),
            q("LISTEN dchan"),
            q("SELECT pg_advisory_lock(77)"),
            q("DECLARE dc CURSOR WITH HOLD FOR SELECT 1"),
            q("SELECT set_config('diff.custom', 'c', false) AS v"),
            q(LEAKS),
            q("DISCARD ALL"),
            q("SHOW TimeZone"),
            q("SHOW search_path"),
            q("SELECT label FROM t ORDER BY id"),
            q("SELECT to_regclass('d') IS NULL AS gone"),
            q("EXECUTE dp"),
            q("SELECT current_setting('diff.custom', true) AS v"),
            q(LEAKS),
            q("BEGIN"),
            q("DISCARD ALL"),
            q("ROLLBACK"),
            q("SHOW application_name"),
            q("CREATE TEMP TABLE d (x int)"),
            q("SELECT count(*) FROM d"),
            q(LEAKS),
        ],
    ),
]


def params_of(conn):
    return {p: conn.get_parameter_status(p) for p in REPORTED}


def run_step(conn, session, index, step):
    rec = {"client": "psycopg2", "session": session, "step": index, "sql": step["sql"]}
    if step.get("kind") == "copy_in":
        rec["copy_in"] = step["data"]
    if step.get("args") is not None:
        rec["args"] = [str(a) for a in step["args"]]
    if step.get("diff"):
        rec["diff"] = step["diff"]
    faulthandler.dump_traceback_later(STEP_TIMEOUT_S, exit=True)
    cur = conn.cursor()
    try:
        kind = step["kind"]
        if kind == "sql":
            cur.execute(step["sql"], step.get("args"))
        elif kind == "copy_in":
            cur.copy_expert(step["sql"], io.StringIO(step["data"]))
        elif kind == "copy_out":
            out = io.StringIO()
            cur.copy_expert(step["sql"], out)
            rec["copy_out"] = out.getvalue()
        elif kind == "poll":
            conn.poll()
        rec["ok"] = True
        if kind != "poll":
            rec["status"] = cur.statusmessage
            rec["rowcount"] = cur.rowcount
        if cur.description is not None:
            rec["columns"] = [d.name for d in cur.description]
            rec["rows"] = [list(r) for r in cur.fetchall()]
    except psycopg2.Error as e:
        rec["ok"] = False
        rec["sqlstate"] = e.pgcode or "client"
        primary = e.diag.message_primary if e.pgcode else None
        rec["message"] = primary or str(e).strip()
    except Exception as e:  # noqa: BLE001 - a client-side failure is a result too
        rec["ok"] = False
        rec["sqlstate"] = "client"
        rec["message"] = "%s: %s" % (type(e).__name__, e)
    finally:
        faulthandler.cancel_dump_traceback_later()
        cur.close()
    rec["notices"] = [n.strip() for n in conn.notices]
    del conn.notices[:]
    rec["notifies"] = [[n.channel, n.payload] for n in conn.notifies]
    del conn.notifies[:]
    rec["params"] = params_of(conn) if not conn.closed else None
    print(json.dumps(rec, ensure_ascii=False, sort_keys=True), flush=True)


def connect(host, port, dbname, user, password):
    options = " ".join("-c %s=%s" % (k, v) for k, v in STARTUP.items() if k != "application_name")
    conn = psycopg2.connect(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        application_name=STARTUP["application_name"],
        options=options,
        connect_timeout=10,
    )
    conn.autocommit = True
    return conn


def main():
    if len(sys.argv) == 6:
        host, port, dbname, user, password = sys.argv[1:]
    else:
        env = os.environ
        host, port = env["PGW_HOST"], env["PGW_PORT"]
        dbname, user, password = env["PGW_DBNAME"], env["PGW_USER"], env["PGW_PASSWORD"]
    only = os.environ.get("PGW_SESSIONS", "")  # comma-separated subset, for debugging
    for name, steps in SESSIONS:
        if only and name not in only.split(","):
            continue
        faulthandler.dump_traceback_later(STEP_TIMEOUT_S, exit=True)
        conn = connect(host, port, dbname, user, password)
        faulthandler.cancel_dump_traceback_later()
        print(
            json.dumps(
                {"client": "psycopg2", "session": name, "step": -1, "sql": "(connect)",
                 "ok": True, "params": params_of(conn)},
                sort_keys=True,
            ),
            flush=True,
        )
        for i, step in enumerate(steps):
            run_step(conn, name, i, step)
        conn.close()
    print(json.dumps({"client": "psycopg2", "done": True}), flush=True)


if __name__ == "__main__":
    main()
