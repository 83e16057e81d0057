// Registration and challenge-response burst: new agents register (API key with
// agents:write), ask for a challenge, and prove possession. The challenge exists only
// at run time, so its signature comes from the presign tool's signer (the agents'
// side, in its own process: `agentid-presign signer`), not from k6; those calls are
// tagged `kind:signer` and kept out of the thresholds.
//
// One scenario, `burst`: ramping-arrival-rate from 0 to REG_RATE registrations/s in
// REG_RISE_SECS, held REG_HOLD_SECS, then down. Each iteration = register +
// challenge + verify (three API requests).
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';
import { BASE_URL, JSON_HEADERS, TREND_STATS, SYSTEM_TAGS, bearer, num, required, summary } from './lib.js';

const KEYS = required('REG_KEYS');
const API_KEY = required('API_KEY');
const SIGNER = required('SIGNER_URL');
const keys = new SharedArray('keys', () => JSON.parse(open(KEYS)));

const RATE = num('REG_RATE', 200);
const RISE = num('REG_RISE_SECS', 5);
const HOLD = num('REG_HOLD_SECS', 20);
const P95 = num('REG_P95_MS', 50);
const P99 = num('REG_P99_MS', 100);

const exhausted = new Counter('keys_exhausted');

export const options = {
  scenarios: {
    burst: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      stages: [
        { target: RATE, duration: `${RISE}s` },
        { target: RATE, duration: `${HOLD}s` },
        { target: 0, duration: '2s' },
      ],
      preAllocatedVUs: 50,
      maxVUs: num('MAX_VUS', 400),
    },
  },
  thresholds: {
    'http_req_duration{kind:api}': [`p(95)<${P95}`, `p(99)<${P99}`],
    'http_req_duration{endpoint:register}': [`p(95)<${P95}`, `p(99)<${P99}`],
    'http_req_duration{endpoint:challenge}': [`p(95)<${P95}`, `p(99)<${P99}`],
    'http_req_duration{endpoint:verify}': [`p(95)<${P95}`, `p(99)<${P99}`],
    'http_req_failed{kind:api}': ['rate==0'],
    'http_reqs{kind:api}': ['count>0'],
    checks: ['rate==1'],
    keys_exhausted: ['count==0'],
  },
  summaryTrendStats: TREND_STATS,
  systemTags: SYSTEM_TAGS,
};

function tags(endpoint) {
  return { tags: { kind: 'api', endpoint, name: endpoint } };
}

export default function () {
  const i = exec.scenario.iterationInTest;
  if (i >= keys.length) {
    exhausted.add(1);
    return;
  }
  const k = keys[i];
  const reg = http.post(
    `${BASE_URL}/api/v1/agents`,
    JSON.stringify({ name: k.name, public_key: k.public_key, requested_capabilities: ['email:send'] }),
    Object.assign({ headers: bearer(API_KEY) }, tags('register')),
  );
  if (!check(reg, { 'registered (201)': (r) => r.status === 201 })) return;
  const agentId = reg.json('id');
  const ch = http.post(`${BASE_URL}/api/v1/agents/${agentId}/challenge`, null,
    Object.assign({ headers: JSON_HEADERS }, tags('challenge')));
  if (!check(ch, { 'challenge issued (200)': (r) => r.status === 200 || r.status === 201 })) return;
  const signed = http.post(`${SIGNER}/sign`, JSON.stringify({
    i, agent_id: agentId, challenge: ch.json('challenge'), aud: ch.json('audience'),
  }), { headers: JSON_HEADERS, tags: { kind: 'signer', name: 'signer' } });
  if (!check(signed, { 'signer answered': (r) => r.status === 200 })) return;
  const ver = http.post(`${BASE_URL}/api/v1/agents/${agentId}/verify`, signed.body,
    Object.assign({ headers: JSON_HEADERS }, tags('verify')));
  check(ver, { 'proof accepted (200, token)': (r) => r.status === 200 && r.body.indexOf('access_token') >= 0 });
}

export function handleSummary(data) {
  data.agentid = {
    scenario: 'registration', rate: RATE, rise_secs: RISE, hold_secs: HOLD,
    background: __ENV.REG_BACKGROUND || '',
  };
  return summary(data);
}
