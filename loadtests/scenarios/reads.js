// Management reads an administrator's dashboard makes, shared by management_reads.js
// and login_storm.js. Each iteration is one GET, chosen round robin.
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { BASE_URL, JSON_HEADERS, bearer, required } from './lib.js';

// Signs in once (in k6's setup) as the administrator and collects agent ids and an
// audit cursor to read.
export function adminSetup() {
  const email = required('ADMIN_EMAIL');
  const password = required('ADMIN_PASSWORD');
  const res = http.post(`${BASE_URL}/api/v1/auth/login`, JSON.stringify({ email, password }),
    { headers: JSON_HEADERS, tags: { kind: 'setup' } });
  if (res.status !== 200) fail(`admin login: HTTP ${res.status} ${res.body}`);
  const token = res.json('access_token');
  const agents = http.get(`${BASE_URL}/api/v1/agents?limit=100`, { headers: bearer(token), tags: { kind: 'setup' } });
  if (agents.status !== 200) fail(`agents: HTTP ${agents.status}`);
  const body = agents.json();
  const list = body.agents || body.items || body;
  const ids = (Array.isArray(list) ? list : []).map((a) => a.id).slice(0, 50);
  const audit = http.get(`${BASE_URL}/api/v1/audit?limit=1`, { headers: bearer(token), tags: { kind: 'setup' } });
  const count = audit.status === 200 ? (audit.json('records') || []).length : 0;
  return { token, ids, hasAudit: count > 0 };
}

const PAGES = [
  (d) => ['agents', '/api/v1/agents?limit=50'],
  (d, i) => ['agent', `/api/v1/agents/${d.ids[i % d.ids.length]}`],
  (d) => ['alerts', '/api/v1/alerts?limit=50'],
  (d) => ['alerts_open', '/api/v1/alerts?status=open&limit=50'],
  (d) => ['audit', '/api/v1/audit?limit=100'],
  (d, i) => ['audit_page', `/api/v1/audit?after=${(i * 37) % 400}&limit=100`],
  (d, i) => ['trust', `/api/v1/agents/${d.ids[i % d.ids.length]}/trust`],
];

export function read(data) {
  const i = exec.scenario.iterationInTest;
  const [endpoint, path] = PAGES[i % PAGES.length](data, i);
  const res = http.get(`${BASE_URL}${path}`, {
    headers: bearer(data.token),
    tags: { kind: 'read', endpoint, name: `GET ${endpoint}` },
  });
  check(res, { 'read answered 200': (r) => r.status === 200 }, { kind: 'read' });
}
