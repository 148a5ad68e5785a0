// Starts `highrise up` in a temporary directory on free loopback ports, makes a tenant org
// with an owner and a viewer who sign in with passwords, and hands the addresses and
// credentials to the tests through the environment.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export default async function globalSetup() {
  const root = path.resolve(__dirname, '../..');
  const bin = process.env.HIGHRISE_BIN ?? path.join(root, 'target/debug/highrise');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hr-console-'));
  fs.chmodSync(work, 0o711);
  const api = `127.0.0.1:${await freePort()}`;
  // Two clouds' proxies in each of the two cells.
  const proxies: string[] = [];
  for (let i = 0; i < 4; i++) proxies.push('--proxy-listen', `127.0.0.1:${await freePort()}`);
  const log = fs.openSync(path.join(work, 'up.log'), 'w');
  const up = spawn(
    bin,
    ['up', '--data-dir', path.join(work, 'data'), '--api-listen', api, ...proxies],
    { env: { ...process.env, HIGHRISE_CONFIG: path.join(work, 'client.json') }, stdio: ['ignore', log, log] },
  );
  let exited = false;
  up.on('exit', () => (exited = true));
  const base = `http://${api}`;
  const operator = await until('highrise up', 120_000, async () => {
    if (exited) throw new Error(`highrise up exited:\n${fs.readFileSync(path.join(work, 'up.log'), 'utf8')}`);
    const ok = (await fetch(`${base}/healthz`)).ok;
    const config = path.join(work, 'client.json');
    return ok && fs.existsSync(config) ? (JSON.parse(fs.readFileSync(config, 'utf8')).api_key as string) : undefined;
  });
  const call = async (method: string, p: string, key: string | undefined, body?: unknown) => {
    const r = await fetch(`${base}${p}`, {
      method,
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const org = await call('POST', '/v1/orgs', operator, { name: 'acme' });
  const orgKey: string = org.api_key.secret;
  const people = { owner: 'owner@acme.test', viewer: 'viewer@acme.test' };
  const password = 'a console test password';
  for (const [role, email] of Object.entries(people)) {
    const invited = await call('POST', '/v1/members', orgKey, { email, role });
    await call('POST', '/v1/invites/accept', undefined, { token: invited.invite_token, password });
  }
  process.env.HIGHRISE_CONSOLE_URL = base;
  process.env.HIGHRISE_ORG_KEY = orgKey;
  process.env.HIGHRISE_OWNER_EMAIL = people.owner;
  process.env.HIGHRISE_VIEWER_EMAIL = people.viewer;
  process.env.HIGHRISE_PASSWORD = password;
  process.env.HIGHRISE_CONSOLE_WORK = work;
  process.env.HIGHRISE_UP_PID = String(up.pid);
}
