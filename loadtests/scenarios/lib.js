// Shared helpers for the agentid k6 scenarios (see loadtests/README.md).

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:18080').replace(/\/$/, '');

export function num(name, fallback) {
  const v = __ENV[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function str(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : v;
}

export function required(name) {
  const v = __ENV[name];
  if (!v) throw new Error(`${name} must be set (the runner loadtests/run sets it)`);
  return v;
}

// Percentiles reported for every trend (the run script reads p(50), p(95), p(99)).
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

// Fewer per-request tags = less k6 CPU per request (the generator shares the machine).
export const SYSTEM_TAGS = ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code'];

export const JSON_HEADERS = { 'Content-Type': 'application/json' };

export function bearer(token) {
  return { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` };
}

// Writes the end-of-test summary as JSON where the runner asked (SUMMARY_JSON), and a
// short text summary on stdout (k6's own text summary needs a remote jslib).
export function summary(data) {
  const out = {};
  const lines = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    if (!m.thresholds) continue;
    for (const [expr, r] of Object.entries(m.thresholds)) {
      lines.push(`${r.ok ? 'ok  ' : 'FAIL'} ${name} ${expr}`);
    }
  }
  const v = (name, key) => (data.metrics[name] && data.metrics[name].values[key]);
  lines.push(`http_reqs ${v('http_reqs', 'count')} (${(v('http_reqs', 'rate') || 0).toFixed(1)}/s), ` +
    `failed ${((v('http_req_failed', 'rate') || 0) * 100).toFixed(3)} %, ` +
    `p95 ${(v('http_req_duration', 'p(95)') || 0).toFixed(2)} ms, p99 ${(v('http_req_duration', 'p(99)') || 0).toFixed(2)} ms`);
  out.stdout = lines.join('\n') + '\n';
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 1);
  return out;
}
