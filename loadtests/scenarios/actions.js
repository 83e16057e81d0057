// Signed-action verification: POST /api/v1/actions/verify with envelopes pre-signed by
// loadtests/presign (one nonce each, so every request is a fresh, allowed decision).
//
// Scenarios (ACTIONS_SCENARIOS, comma-separated, default "steady,ramp"):
// - steady: constant-arrival-rate STEADY_RATE/s for STEADY_SECS (the target: zero
//   errors, p99 under STEADY_P99_MS);
// - ramp:   ramping-arrival-rate to saturation: for each rate in RAMP_STEPS, rise for
//   RAMP_RISE_SECS then hold RAMP_HOLD_SECS; each hold is measured on its own
//   (custom metrics ramp_ms_<rate>, ramp_ok_<rate>, ramp_err_<rate>);
// - soak:   constant-arrival-rate SOAK_RATE/s for SOAK_SECS (the runner samples the
//   server's RSS meanwhile).
// Envelope i of a scenario is line OFFSET_<SCENARIO> + i of ENVELOPES; the runner signs
// exactly enough of them right before the run.
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';
import { BASE_URL, JSON_HEADERS, TREND_STATS, SYSTEM_TAGS, num, str, required, summary } from './lib.js';

const ENVELOPES = required('ENVELOPES');
const envelopes = new SharedArray('envelopes', () =>
  open(ENVELOPES).split('\n').filter((l) => l.length > 0));

const wanted = str('ACTIONS_SCENARIOS', 'steady,ramp').split(',').map((s) => s.trim());
const STEADY_RATE = num('STEADY_RATE', 5000);
const STEADY_SECS = num('STEADY_SECS', 60);
const STEADY_P95_MS = num('STEADY_P95_MS', 15);
const STEADY_P99_MS = num('STEADY_P99_MS', 25);
const RAMP_STEPS = str('RAMP_STEPS', '2000,4000,6000,8000,10000').split(',').map(Number);
const RAMP_RISE_SECS = num('RAMP_RISE_SECS', 3);
const RAMP_HOLD_SECS = num('RAMP_HOLD_SECS', 12);
const RAMP_P95_MS = num('RAMP_P95_MS', 1000);
const RAMP_P99_MS = num('RAMP_P99_MS', 2000);
const RAMP_MAX_ERROR_RATE = num('RAMP_MAX_ERROR_RATE', 0.05);
const SOAK_RATE = num('SOAK_RATE', 2000);
const SOAK_SECS = num('SOAK_SECS', 300);
const SOAK_P95_MS = num('SOAK_P95_MS', 25);
const SOAK_P99_MS = num('SOAK_P99_MS', 50);
const MAX_VUS = num('MAX_VUS', 600);
const GAP_SECS = 5;

// Where each scenario's envelopes start in the file (the runner computes the same).
export function envelopesNeeded() {
  let ramp = 0;
  let prev = RAMP_STEPS[0];
  for (const r of RAMP_STEPS) {
    ramp += ((prev + r) / 2) * RAMP_RISE_SECS + r * RAMP_HOLD_SECS;
    prev = r;
  }
  return { steady: STEADY_RATE * STEADY_SECS, ramp: Math.ceil(ramp), soak: SOAK_RATE * SOAK_SECS };
}
const offsets = {};
{
  let at = 0;
  const need = envelopesNeeded();
  for (const name of wanted) {
    offsets[name] = at;
    at += need[name] + 1000;
  }
}

const scenarios = {};
const thresholds = {
  envelopes_exhausted: ['count==0'],
};
let start = 0;
if (wanted.includes('steady')) {
  scenarios.steady = {
    executor: 'constant-arrival-rate',
    rate: STEADY_RATE,
    timeUnit: '1s',
    duration: `${STEADY_SECS}s`,
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(50, Math.ceil(STEADY_RATE / 10))),
    maxVUs: MAX_VUS,
    startTime: `${start}s`,
    tags: { scenario_kind: 'steady' },
  };
  thresholds['http_req_duration{scenario:steady}'] = [`p(95)<${STEADY_P95_MS}`, `p(99)<${STEADY_P99_MS}`];
  thresholds['http_req_failed{scenario:steady}'] = ['rate==0'];
  thresholds['checks{scenario:steady}'] = ['rate==1'];
  thresholds['dropped_iterations{scenario:steady}'] = [`count<=${Math.ceil(STEADY_RATE * STEADY_SECS * 0.001)}`];
  thresholds['http_reqs{scenario:steady}'] = ['count>0'];
  start += STEADY_SECS + GAP_SECS;
}
const stepWindows = [];
if (wanted.includes('ramp')) {
  const stages = [];
  let t = 0;
  for (const r of RAMP_STEPS) {
    stages.push({ target: r, duration: `${RAMP_RISE_SECS}s` });
    stages.push({ target: r, duration: `${RAMP_HOLD_SECS}s` });
    stepWindows.push({ rate: r, from: t + RAMP_RISE_SECS, to: t + RAMP_RISE_SECS + RAMP_HOLD_SECS });
    t += RAMP_RISE_SECS + RAMP_HOLD_SECS;
  }
  scenarios.ramp = {
    executor: 'ramping-arrival-rate',
    startRate: RAMP_STEPS[0],
    timeUnit: '1s',
    stages,
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(50, Math.ceil(RAMP_STEPS[RAMP_STEPS.length - 1] / 20))),
    maxVUs: MAX_VUS,
    startTime: `${start}s`,
    tags: { scenario_kind: 'ramp' },
  };
  thresholds['http_req_duration{scenario:ramp}'] = [`p(95)<${RAMP_P95_MS}`, `p(99)<${RAMP_P99_MS}`];
  thresholds['http_req_failed{scenario:ramp}'] = [`rate<${RAMP_MAX_ERROR_RATE}`];
  thresholds['checks{scenario:ramp}'] = [`rate>${1 - RAMP_MAX_ERROR_RATE}`];
  thresholds['http_reqs{scenario:ramp}'] = ['count>0'];
  start += t + GAP_SECS;
}
if (wanted.includes('soak')) {
  scenarios.soak = {
    executor: 'constant-arrival-rate',
    rate: SOAK_RATE,
    timeUnit: '1s',
    duration: `${SOAK_SECS}s`,
    preAllocatedVUs: Math.min(MAX_VUS, Math.max(50, Math.ceil(SOAK_RATE / 10))),
    maxVUs: MAX_VUS,
    startTime: `${start}s`,
    tags: { scenario_kind: 'soak' },
  };
  thresholds['http_req_duration{scenario:soak}'] = [`p(95)<${SOAK_P95_MS}`, `p(99)<${SOAK_P99_MS}`];
  thresholds['http_req_failed{scenario:soak}'] = ['rate==0'];
  thresholds['checks{scenario:soak}'] = ['rate==1'];
  thresholds['http_reqs{scenario:soak}'] = ['count>0'];
  start += SOAK_SECS + GAP_SECS;
}

// Per-step metrics of the ramp (only requests sent during a step's hold count).
const stepMetrics = {};
for (const w of stepWindows) {
  stepMetrics[w.rate] = {
    ms: new Trend(`ramp_ms_${w.rate}`, true),
    ok: new Counter(`ramp_ok_${w.rate}`),
    err: new Counter(`ramp_err_${w.rate}`),
  };
}
const exhausted = new Counter('envelopes_exhausted');

export const options = {
  scenarios,
  thresholds,
  summaryTrendStats: TREND_STATS,
  systemTags: SYSTEM_TAGS,
  discardResponseBodies: false,
  // One connection per VU, reused (keep-alive): what a service calling agentid does.
  noConnectionReuse: false,
  setupTimeout: '60s',
};

const URL = `${BASE_URL}/api/v1/actions/verify`;
const PARAMS = { headers: JSON_HEADERS, tags: { name: 'POST /api/v1/actions/verify' } };

export default function () {
  const name = exec.scenario.name;
  const i = offsets[name] + exec.scenario.iterationInTest;
  if (i >= envelopes.length) {
    exhausted.add(1);
    return;
  }
  const sentAt = (Date.now() - exec.scenario.startTime) / 1000;
  const res = http.post(URL, envelopes[i], PARAMS);
  const ok = check(res, {
    'allowed (200, "allowed":true)': (r) => r.status === 200 && typeof r.body === 'string'
      && r.body.indexOf('"allowed":true') >= 0,
  });
  if (name === 'ramp') {
    for (const w of stepWindows) {
      if (sentAt >= w.from && sentAt < w.to) {
        const m = stepMetrics[w.rate];
        m.ms.add(res.timings.duration);
        (ok ? m.ok : m.err).add(1);
        break;
      }
    }
  }
}

export function handleSummary(data) {
  data.agentid = {
    scenario: 'actions',
    steady: { rate: STEADY_RATE, secs: STEADY_SECS },
    ramp: { steps: stepWindows, hold_secs: RAMP_HOLD_SECS },
    soak: { rate: SOAK_RATE, secs: SOAK_SECS },
    wanted,
  };
  return summary(data);
}
