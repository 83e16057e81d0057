// Login storm: password guessing against one account and from one address, while an
// administrator's management reads keep being served. Run against a server with the
// DEFAULT limits: the brute-force limiter (server/src/auth/limiter.rs: 10 failures per
// account and 50 per address within 60 s start a 60 s lockout, answered 429 before any
// bcrypt) and the request rate limits (docs/rate-limits.md: auth.address 60/min,
// reads.credential 1,200/min, ...). The administrator's reads therefore run at a rate
// one credential may sustain (READS_RATE, default 15/s).
//
// Scenarios, all from this one client address (127.0.0.1), for STORM_SECS (< 60 s, so
// the whole storm is inside one limiter window):
// - guess_account: STORM_RATE wrong passwords/s against VICTIM_EMAIL (a real account);
// - right_password: from STORM_SECS/3 on, the victim's RIGHT password once a second:
//   it must be refused (429) while the account is locked;
// - spray: SPRAY_RATE wrong passwords/s against ever-new unknown emails (the address
//   limit);
// - reads: READS_RATE management reads/s with an access token taken before the storm;
//   they must stay under their thresholds.
//
// At most 10 answers to the victim and at most 50 in all may be "wrong password" (401,
// i.e. a password was checked); everything after is 429.
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { BASE_URL, JSON_HEADERS, TREND_STATS, SYSTEM_TAGS, num, required, summary } from './lib.js';
import { adminSetup, read } from './reads.js';

const VICTIM = required('VICTIM_EMAIL');
const VICTIM_PASSWORD = required('VICTIM_PASSWORD');
const SECS = num('STORM_SECS', 30);
const STORM_RATE = num('STORM_RATE', 50);
const SPRAY_RATE = num('SPRAY_RATE', 50);
const READS_RATE = num('READS_RATE', 15);
const READS_P95 = num('READS_P95_MS', 50);
const READS_P99 = num('READS_P99_MS', 100);
const REFUSAL_P99 = num('REFUSAL_P99_MS', 50);
const ACCOUNT_LIMIT = num('ACCOUNT_LIMIT', 10);
const ADDRESS_LIMIT = num('ADDRESS_LIMIT', 50);

const victimChecked = new Counter('victim_password_checked');
const allChecked = new Counter('passwords_checked');
const refused = new Counter('logins_refused_429');
const unexpected = new Counter('logins_unexpected_status');

const expected = http.expectedStatuses(401, 429);

export const options = {
  scenarios: {
    guess_account: {
      executor: 'constant-arrival-rate', exec: 'guessAccount', rate: STORM_RATE, timeUnit: '1s',
      duration: `${SECS}s`, preAllocatedVUs: 20, maxVUs: 200,
    },
    right_password: {
      executor: 'constant-arrival-rate', exec: 'rightPassword', rate: 1, timeUnit: '1s',
      duration: `${Math.max(1, Math.floor((SECS * 2) / 3))}s`, startTime: `${Math.floor(SECS / 3)}s`,
      preAllocatedVUs: 2, maxVUs: 10,
    },
    spray: {
      executor: 'constant-arrival-rate', exec: 'spray', rate: SPRAY_RATE, timeUnit: '1s',
      duration: `${SECS}s`, preAllocatedVUs: 20, maxVUs: 200,
    },
    reads: {
      executor: 'constant-arrival-rate', exec: 'reads', rate: READS_RATE, timeUnit: '1s',
      duration: `${SECS}s`, preAllocatedVUs: Math.max(10, Math.ceil(READS_RATE / 20)), maxVUs: 400,
    },
  },
  thresholds: {
    // Other traffic is served.
    'http_req_duration{kind:read}': [`p(95)<${READS_P95}`, `p(99)<${READS_P99}`],
    'http_req_failed{kind:read}': ['rate==0'],
    'checks{kind:read}': ['rate==1'],
    'http_reqs{kind:read}': ['count>0'],
    // The limits hold.
    victim_password_checked: [`count<=${ACCOUNT_LIMIT}`],
    passwords_checked: [`count<=${ADDRESS_LIMIT}`],
    logins_refused_429: ['count>0'],
    logins_unexpected_status: ['count==0'],
    'checks{kind:login}': ['rate==1'],
    // Refusals are cheap (no bcrypt), and nothing but 401/429 comes back.
    'http_req_duration{kind:login,status:429}': [`p(95)<${REFUSAL_P99}`, `p(99)<${REFUSAL_P99}`],
    'http_req_failed{kind:login}': ['rate==0'],
  },
  summaryTrendStats: TREND_STATS,
  systemTags: SYSTEM_TAGS,
};

export function setup() {
  // The administrator signs in before the storm (the storm locks the address out).
  return adminSetup();
}

function login(email, password, who) {
  const res = http.post(`${BASE_URL}/api/v1/auth/login`, JSON.stringify({ email, password }), {
    headers: JSON_HEADERS,
    responseCallback: expected,
    tags: { kind: 'login', who, name: 'POST /api/v1/auth/login' },
  });
  if (res.status === 401) {
    allChecked.add(1);
    if (email === VICTIM) victimChecked.add(1);
  } else if (res.status === 429) {
    refused.add(1);
  } else {
    unexpected.add(1);
  }
  return res;
}

export function guessAccount() {
  const res = login(VICTIM, `wrong-guess-${exec.scenario.iterationInTest}-xyz`, 'guess');
  check(res, { 'guess refused (401 or 429)': (r) => r.status === 401 || r.status === 429 }, { kind: 'login' });
}

export function rightPassword() {
  const res = login(VICTIM, VICTIM_PASSWORD, 'owner');
  check(res, {
    'right password refused while locked (429, Retry-After)': (r) => r.status === 429 && !!r.headers['Retry-After'],
  }, { kind: 'login' });
}

export function spray() {
  const res = login(`nobody-${exec.vu.idInTest}-${exec.scenario.iterationInTest}@spray.example`,
    'correct horse battery staple', 'spray');
  check(res, { 'spray refused (401 or 429)': (r) => r.status === 401 || r.status === 429 }, { kind: 'login' });
}

export function reads(data) {
  read(data);
}

export function handleSummary(data) {
  data.agentid = { scenario: 'login_storm', secs: SECS, storm_rate: STORM_RATE, spray_rate: SPRAY_RATE, reads_rate: READS_RATE };
  return summary(data);
}
