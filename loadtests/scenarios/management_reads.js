// Management reads by an administrator (access token from a password login): agents,
// one agent, alerts, audit pages, an agent's trust report, round robin, at
// READS_RATE/s for READS_SECS.
import { TREND_STATS, SYSTEM_TAGS, num, summary } from './lib.js';
import { adminSetup, read } from './reads.js';

const RATE = num('READS_RATE', 500);
const SECS = num('READS_SECS', 30);
const P95 = num('READS_P95_MS', 50);
const P99 = num('READS_P99_MS', 100);

export const options = {
  scenarios: {
    reads: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${SECS}s`,
      preAllocatedVUs: Math.max(10, Math.ceil(RATE / 20)),
      maxVUs: num('MAX_VUS', 400),
    },
  },
  thresholds: {
    'http_req_duration{kind:read}': [`p(95)<${P95}`, `p(99)<${P99}`],
    'http_req_failed{kind:read}': ['rate==0'],
    'checks{kind:read}': ['rate==1'],
    'http_reqs{kind:read}': ['count>0'],
    'dropped_iterations': [`count<=${Math.ceil(RATE * SECS * 0.001)}`],
  },
  summaryTrendStats: TREND_STATS,
  systemTags: SYSTEM_TAGS,
};

export function setup() {
  return adminSetup();
}

export default function (data) {
  read(data);
}

export function handleSummary(data) {
  data.agentid = { scenario: 'management_reads', rate: RATE, secs: SECS };
  return summary(data);
}
