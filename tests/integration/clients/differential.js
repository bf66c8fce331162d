// The differential corpus for node-postgres (pg@8): named client sessions, each step one JSON line.
//
// Usage: node differential.js HOST PORT DBNAME USER PASSWORD (or PGW_HOST, PGW_PORT, PGW_DBNAME,
// PGW_USER, PGW_PASSWORD in the environment; `pg` found through NODE_PATH). Needs the tables
// of proxy_differential_test.cpp (public.t, diff_s1.t, diff_s2.t, diff_copy, diff_seq_js).
//
// Every session is one Client. Steps run in the simple protocol (client.query(text)), the
// extended protocol (unnamed: {text, values}; queryMode 'extended' for statements without
// parameters) or as named prepared statements ({name, text, values}). Per step the transcript
// has the statement, ok or SQLSTATE and message, column names, rows as the server's text, the
// command tag and rowCount, notices, notifications (channel, payload) and the parameters last
// heard in ParameterStatus. Values that differ by nature (backend PIDs, timestamps of now,
// pg_stat_activity, client ports) are never selected.
//
// A step may carry "diff": a difference the README documents for transaction pooling. The test
// accepts, on that step only and only in transaction mode, the named alternative result.
'use strict';

const { Client } = require('pg');

const STEP_TIMEOUT_MS = 30000; // a step that hangs ends the script (exit code 3)

const REPORTED = [
  'TimeZone',
  'DateStyle',
  'client_encoding',
  'standard_conforming_strings',
  'application_name',
  'IntervalStyle',
];

// Given in the startup packet: application_name and statement_timeout as their own
// parameters, the rest as -c options.
const STARTUP = {
  application_name: 'diff_js',
  statement_timeout: '20s',
  TimeZone: 'America/Sao_Paulo',
  DateStyle: 'SQL, DMY',
};

const LEAKS =
  "SELECT to_regclass('noise_tmp') IS NULL AS no_noise_tmp," +
  " to_regclass('noise_keep') IS NULL AS no_noise_keep," +
  ' (SELECT count(*) FROM pg_listening_channels()) AS listening,' +
  ' (SELECT count(*) FROM pg_cursors) AS cursors,' +
  ' (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS sql_prepared,' +
  " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())" +
  ' AS advisory_locks,' +
  " current_setting('search_path') AS search_path," +
  " current_setting('statement_timeout') AS statement_timeout," +
  " current_setting('lock_timeout') AS lock_timeout," +
  " current_setting('extra_float_digits') AS extra_float_digits," +
  " current_setting('default_transaction_read_only') AS read_only";
const OWN_LOCKS =
  'SELECT objid, mode, granted FROM pg_locks' +
  " WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY objid, mode";
const STATEMENTS = 'SELECT name, from_sql, statement FROM pg_prepared_statements ORDER BY name';
const DATE = "SELECT DATE '2021-03-04' AS d";

// (2), a RESET's default for the rest of its own query string, is not exercised here: node
// sends one statement per query.

// (3): currval()/lastval() in a later transaction than the nextval() that set them.
function seqUndefined(message) {
  return {
    kind: 'sequence_cache',
    reason: '(3) currval()/lastval() in a later transaction than nextval() may be undefined',
    sqlstate: '55000',
    message,
  };
}

const PROXY_STATEMENTS = {
  kind: 'proxy_statements',
  reason: "(4) pg_prepared_statements lists the proxy's shared statements (pgw_...)",
};

// Step builders: simple, extended (unnamed; values may be []), named, a pause for notifications.
const q = (text, diff) => ({ mode: 'simple', text, diff });
const x = (text, values, diff) => ({ mode: 'extended', text, values, diff });
const n = (name, text, values, diff) => ({ mode: 'named', name, text, values, diff });
const wait = (ms) => ({ mode: 'wait', text: `(wait ${ms} ms)`, ms });

const SESSIONS = [
  [
    'basics',
    [
      q(LEAKS),
      q("SELECT 1 AS one, 'two' AS two, NULL AS nothing"),
      x('SELECT $1::text AS a, $2::int + 1 AS b, $3::text IS NULL AS n', ['x', 41, null]),
      x('SELECT $1::date AS d, $2::timestamptz AS ts, $3::interval AS iv', [
        '2021-03-04',
        '2021-03-04 05:06:07+00',
        '1 day 02:03:04',
      ]),
      q(
        "SELECT DATE '2021-03-04' AS d, TIMESTAMPTZ '2021-03-04 05:06:07+00' AS ts," +
          " INTERVAL '1 day 02:03:04' AS iv, 1.234567890123::float8 AS f"
      ),
      q('SHOW statement_timeout'),
      q('SHOW TimeZone'),
      q('SHOW DateStyle'),
      q('SHOW application_name'),
      x('SHOW TimeZone', []),
      x('SELECT current_setting($1) AS v', ['search_path']),
      q('SELECT 1 AS a; SELECT 2 AS b'),
      x('SELECT g FROM generate_series(1, $1::int) g', [3]),
      x('SELECT $1::text AS v, length($1::text) AS chars', ['é€ü']),
      x('SELECT $1::text AS v', ['a\\b']),
      q("SELECT 'a\\b' AS backslash"),
      x('SELECT label FROM t WHERE id = $1', [1]),
      q('SELECT pg_sleep(0.3)'),
      x('SELECT pg_sleep($1)', [0.3]),
      q('BEGIN'),
      x('SELECT label FROM t ORDER BY id', []),
      q('COMMIT'),
      q(LEAKS),
    ],
  ],
  [
    'named_statements',
    [
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [21]),
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [5]),
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [-1]),
      n('diff_bad', 'SELECT nosuch + $1::int', [1]),
      n('diff_bad', 'SELECT $1::int AS fixed', [5]),
      n('diff_bad', 'SELECT $1::int AS fixed', [6]),
      q(STATEMENTS, PROXY_STATEMENTS),
      q('BEGIN'),
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [10]),
      n('diff_in_tx', 'SELECT $1::text AS t', ['tx']),
      q('COMMIT'),
      n('diff_in_tx', 'SELECT $1::text AS t', ['after']),
      q('BEGIN'),
      n('diff_fail_tx', 'SELECT 1 / $1::int AS q', [0]),
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [1]),
      q('ROLLBACK'),
      n('diff_fail_tx', 'SELECT 1 / $1::int AS q', [1]),
      n('diff_other', 'SELECT $1::text AS t', ['other']),
      n('diff_other', 'SELECT $1::text || $1::text AS t', ['other']),
      q('DEALLOCATE diff_named'),
      n('diff_named', 'SELECT $1::int * 2 AS doubled', [1]),
      q(STATEMENTS, PROXY_STATEMENTS),
      q('DEALLOCATE ALL'),
      n('diff_bad', 'SELECT $1::int AS fixed', [7]),
      n('diff_after_all', 'SELECT 42 AS answer', []),
      q(STATEMENTS, PROXY_STATEMENTS),
      q(LEAKS),
    ],
  ],
  [
    'extended_protocol',
    [
      x('SELECT 1 / $1::int AS q', [0]),
      x('SELECT $1::int AS v', ['not a number']),
      x('SELEC $1', [1]),
      x('SELECT $1::int AS v', [3]),
      x('BEGIN', []),
      x('INSERT INTO diff_copy VALUES ($1, $2)', [1, 'one']),
      x('SELECT count(*) FROM diff_copy', []),
      x('ROLLBACK', []),
      x('SELECT count(*) FROM diff_copy', []),
      x("SET TimeZone = 'UTC'", []),
      q('SHOW TimeZone'),
      x('RESET TimeZone', []),
      q('SHOW TimeZone'),
      x("SET application_name = 'ext_app'", []),
      x('SHOW application_name', []),
      x('RESET application_name', []),
      x('SHOW application_name', []),
      x("SELECT set_config('DateStyle', 'ISO, YMD', false) AS v", []),
      x('SELECT $1::date AS d', ['2021-03-04']),
      x('RESET DateStyle', []),
      x('SELECT $1::date AS d', ['2021-03-04']),
      x("SELECT set_config('search_path', $1, false) AS v", ['diff_s2']),
      x('SELECT label FROM t ORDER BY id', []),
      x('RESET search_path', []),
      x('SELECT label FROM t ORDER BY id', []),
      q('BEGIN'),
      x('SELECT 1 / $1::int AS q', [0]),
      x('SELECT 1', []),
      q('ROLLBACK'),
      x("SET LOCAL TimeZone = 'UTC'", []),
      x('SHOW TimeZone', []),
      q('BEGIN'),
      x("SET LOCAL TimeZone = 'UTC'", []),
      x('SHOW TimeZone', []),
      q('COMMIT'),
      x('SHOW TimeZone', []),
      q(LEAKS),
    ],
  ],
  [
    'set_reset',
    [
      q('SHOW statement_timeout'),
      q("SET statement_timeout = '1s'"),
      q('SHOW statement_timeout'),
      q('RESET statement_timeout'),
      q('SHOW statement_timeout'),
      q('BEGIN'),
      q('RESET statement_timeout'),
      q('SHOW statement_timeout'),
      q('COMMIT'),
      q('SHOW statement_timeout'),
      q('BEGIN'),
      q('RESET ALL'),
      q('SHOW DateStyle'),
      q(DATE),
      q('SHOW statement_timeout'),
      q('COMMIT'),
      q('SHOW DateStyle'),
      q('SHOW statement_timeout'),
      q("SET TimeZone = 'UTC'"),
      q('RESET TimeZone'),
      q('SHOW TimeZone'),
      q('BEGIN'),
      q("SET TimeZone = 'Europe/Berlin'"),
      q('ROLLBACK'),
      q('SHOW TimeZone'),
      q('BEGIN'),
      q("SET LOCAL DateStyle = 'ISO, MDY'"),
      x('SELECT $1::date AS d', ['2021-03-04']),
      q('COMMIT'),
      x('SELECT $1::date AS d', ['2021-03-04']),
      x('DISCARD ALL', []),
      q('SHOW TimeZone'),
      q('SHOW statement_timeout'),
      q('SHOW application_name'),
      q(LEAKS),
    ],
  ],
  [
    'statement_timeout',
    [
      q("SET statement_timeout = '100ms'"),
      x('SELECT pg_sleep($1)', [2]),
      q("SELECT 'alive' AS v"),
      n('sleeper', 'SELECT pg_sleep($1)', [2]),
      n('sleeper', 'SELECT pg_sleep($1)', [0.01]),
      q('RESET statement_timeout'),
      x('SELECT pg_sleep($1)', [0.3]),
      q(LEAKS),
    ],
  ],
  [
    'copy',
    [
      q('COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT'),
      q('COPY diff_copy FROM STDIN'),
      q('SELECT count(*) FROM diff_copy'),
      q('BEGIN'),
      q('COPY diff_copy FROM STDIN'),
      q('SELECT 1'),
      q('ROLLBACK'),
      q("SELECT 'after copy' AS v"),
      x('COPY (SELECT 1) TO STDOUT', []),
      q(LEAKS),
    ],
  ],
  [
    'listen',
    [
      q('LISTEN diff_chan_js'),
      q("NOTIFY diff_chan_js, 'hello'"),
      x('SELECT pg_notify($1, $2) AS v', ['diff_chan_js', 'extended payload']),
      q('BEGIN'),
      q("NOTIFY diff_chan_js, 'a'"),
      q("NOTIFY diff_chan_js, 'b'"),
      q('COMMIT'),
      wait(100),
      q('SELECT * FROM pg_listening_channels()'),
      q('UNLISTEN *'),
      q("NOTIFY diff_chan_js, 'unheard'"),
      wait(100),
      q(LEAKS),
    ],
  ],
  [
    'temp_and_cursors',
    [
      q('CREATE TEMP TABLE tj (id int, v text)'),
      x('INSERT INTO tj VALUES ($1, $2)', [1, 'a']),
      x('INSERT INTO tj VALUES ($1, $2)', [2, 'b']),
      n('tj_sel', 'SELECT v FROM tj WHERE id = $1', [2]),
      q('DECLARE hj CURSOR WITH HOLD FOR SELECT id, v FROM tj ORDER BY id'),
      q('FETCH 1 FROM hj'),
      x('FETCH ALL FROM hj', []),
      q('CLOSE hj'),
      q('BEGIN'),
      q('CREATE TEMP TABLE tj2 (x int) ON COMMIT DROP'),
      x('INSERT INTO tj2 VALUES ($1)', [7]),
      x('SELECT x FROM tj2', []),
      q('COMMIT'),
      q('SELECT x FROM tj2'),
      q('BEGIN'),
      x('DECLARE cj CURSOR FOR SELECT g FROM generate_series(1, $1::int) g', [4]),
      x('FETCH 2 FROM cj', []),
      q('FETCH ALL FROM cj'),
      q('COMMIT'),
      n('tj_sel', 'SELECT v FROM tj WHERE id = $1', [1]),
      q(LEAKS),
    ],
  ],
  [
    'advisory',
    [
      x('SELECT pg_advisory_lock($1)', [2001]),
      q(OWN_LOCKS),
      x('SELECT pg_advisory_unlock($1)', [2001]),
      x('SELECT pg_advisory_unlock($1)', [2001]),
      q('BEGIN'),
      x('SELECT pg_advisory_xact_lock($1)', [2002]),
      q(OWN_LOCKS),
      q('COMMIT'),
      q(OWN_LOCKS),
      q(LEAKS),
    ],
  ],
  [
    'sequences',
    [
      x('SELECT currval($1)', ['diff_seq_js']),
      x('SELECT nextval($1)', ['diff_seq_js']),
      x(
        'SELECT currval($1)',
        ['diff_seq_js'],
        seqUndefined('currval of sequence "diff_seq_js" is not yet defined in this session')
      ),
      q('SELECT lastval()', seqUndefined('lastval is not yet defined in this session')),
      q('BEGIN'),
      n('seq_next', 'SELECT nextval($1)', ['diff_seq_js']),
      n('seq_curr', 'SELECT currval($1)', ['diff_seq_js']),
      q('COMMIT'),
      n(
        'seq_curr',
        'SELECT currval($1)',
        ['diff_seq_js'],
        seqUndefined('currval of sequence "diff_seq_js" is not yet defined in this session')
      ),
      q('DISCARD SEQUENCES'),
      n('seq_curr', 'SELECT currval($1)', ['diff_seq_js']),
      q(LEAKS),
    ],
  ],
  [
    'sql_prepare',
    [
      q('PREPARE sp(int) AS SELECT $1 * 3 AS tripled'),
      q('EXECUTE sp(2)'),
      x('EXECUTE sp($1)', [5]),
      q(STATEMENTS, PROXY_STATEMENTS),
      q('DEALLOCATE sp'),
      q('EXECUTE sp(2)'),
      q(LEAKS),
    ],
  ],
  [
    'discard_all',
    [
      n('dj', 'SELECT $1::int AS v', [1]),
      q("SET TimeZone = 'UTC'"),
      q('CREATE TEMP TABLE dtj (x int)'),
      q('DISCARD ALL'),
      n('dj', 'SELECT $1::int AS v', [2]),
      q('SHOW TimeZone'),
      q('SHOW statement_timeout'),
      q('SELECT count(*) FROM dtj'),
      n('dj2', 'SELECT $1::int AS v', [3]),
      q(LEAKS),
    ],
  ],
];

function recordResult(rec, r) {
  rec.command = r.command;
  rec.rowCount = r.rowCount;
  if (r.fields && r.fields.length > 0) {
    rec.columns = r.fields.map((f) => f.name);
    rec.rows = r.rows;
  }
}

async function runStep(client, state, session, index, step) {
  const rec = { client: 'node-postgres', session, step: index, sql: step.text, mode: step.mode };
  if (step.name) rec.name = step.name;
  if (step.values) rec.values = step.values.map((v) => (v === null ? null : String(v)));
  if (step.diff) rec.diff = step.diff;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('step timed out')), STEP_TIMEOUT_MS);
  });
  try {
    let result;
    if (step.mode === 'wait') {
      await new Promise((resolve) => setTimeout(resolve, step.ms));
    } else {
      const config = { text: step.text, rowMode: 'array' };
      if (step.mode === 'extended') {
        config.values = step.values;
        config.queryMode = 'extended';
      } else if (step.mode === 'named') {
        config.name = step.name;
        config.values = step.values;
      }
      result = await Promise.race([client.query(config), timeout]);
    }
    rec.ok = true;
    if (Array.isArray(result)) {
      rec.results = result.map((r) => {
        const one = {};
        recordResult(one, r);
        return one;
      });
    } else if (result) {
      recordResult(rec, result);
    }
  } catch (e) {
    if (e.message === 'step timed out') {
      rec.ok = false;
      rec.sqlstate = 'client-timeout';
      rec.message = e.message;
      console.log(JSON.stringify(rec));
      process.exit(3);
    }
    rec.ok = false;
    rec.sqlstate = e.code || 'client';
    rec.message = e.message;
  } finally {
    clearTimeout(timer);
  }
  rec.notices = state.notices.splice(0);
  rec.notifies = state.notifies.splice(0);
  rec.params = reportedParams(state);
  console.log(JSON.stringify(sortKeys(rec)));
}

function reportedParams(state) {
  const out = {};
  for (const p of REPORTED) out[p] = p in state.params ? state.params[p] : null;
  return out;
}

function sortKeys(obj) {
  const out = {};
  for (const k of Object.keys(obj).sort()) out[k] = obj[k];
  return out;
}

async function main() {
  let [host, port, database, user, password] = process.argv.slice(2);
  if (process.argv.length !== 7) {
    const env = process.env;
    [host, port, database, user, password] = [
      env.PGW_HOST,
      env.PGW_PORT,
      env.PGW_DBNAME,
      env.PGW_USER,
      env.PGW_PASSWORD,
    ];
  }
  const only = (process.env.PGW_SESSIONS || '').split(',').filter((s) => s);
  const options = Object.entries(STARTUP)
    .filter(([k]) => k !== 'application_name' && k !== 'statement_timeout')
    .map(([k, v]) => `-c ${k}=${v.replace(/ /g, '\\ ')}`)
    .join(' ');
  for (const [session, steps] of SESSIONS) {
    if (only.length > 0 && !only.includes(session)) continue;
    const client = new Client({
      host,
      port: Number(port),
      database,
      user,
      password,
      application_name: STARTUP.application_name,
      statement_timeout: parseInt(STARTUP.statement_timeout, 10) * 1000,
      options,
      connectionTimeoutMillis: 10000,
      types: { getTypeParser: () => (v) => v }, // rows as the server's text
    });
    const state = { params: {}, notices: [], notifies: [] };
    client.connection.on('parameterStatus', (m) => {
      state.params[m.parameterName] = m.parameterValue;
    });
    client.on('notice', (m) => state.notices.push(`${m.severity}:  ${m.message}`));
    client.on('notification', (m) => state.notifies.push([m.channel, m.payload]));
    client.on('error', (e) => state.notices.push(`client error: ${e.message}`));
    await client.connect();
    console.log(
      JSON.stringify(
        sortKeys({
          client: 'node-postgres',
          session,
          step: -1,
          sql: '(connect)',
          ok: true,
          params: reportedParams(state),
        })
      )
    );
    for (let i = 0; i < steps.length; i++) await runStep(client, state, session, i, steps[i]);
    await client.end();
  }
  console.log(JSON.stringify({ client: 'node-postgres', done: true }));
}

main().catch((e) => {
  console.error(`ERROR ${e.code || ''} ${e.stack || e.message}`);
  process.exit(1);
});
