// A tenant's day in the console, in a real browser against a real `highrise up`: sign in,
// create a cluster and watch it run, query it with psql through the copied connection
// string, back it up and restore it to a moment, watch its charts, switch over, add a
// standby and move it to another cloud, make and revoke an API key, invite a member and
// change their role, read the audit log, the bill so far and an invoice's PDF, set a hard
// limit in the settings; a viewer has no mutating control and a forged POST from them is
// refused; signing out ends the session; a form without its CSRF token is refused.
// Screenshots of each main page at 1280 and 390 pixels wide go to
// target/console-screenshots/; axe-core checks every main page for critical
// accessibility violations.
import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

test.use({ baseURL: process.env.HIGHRISE_CONSOLE_URL });
test.describe.configure({ mode: 'serial' });

const password = process.env.HIGHRISE_PASSWORD!;
const owner = process.env.HIGHRISE_OWNER_EMAIL!;
const viewer = process.env.HIGHRISE_VIEWER_EMAIL!;
const shots = path.resolve(__dirname, '../../target/console-screenshots');

/** Full-page screenshots at a desktop and a phone width. */
async function screenshots(page: Page, name: string) {
  fs.mkdirSync(shots, { recursive: true });
  for (const [width, height] of [
    [1280, 900],
    [390, 844],
  ]) {
    await page.setViewportSize({ width, height });
    await page.screenshot({ path: path.join(shots, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

/** No critical accessibility violation on the page as it is. */
async function accessible(page: Page) {
  const result = await new AxeBuilder({ page }).analyze();
  const critical = result.violations.filter((v) => v.impact === 'critical');
  expect(critical.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
}

async function signIn(page: Page, email: string) {
  await page.goto('/console/login');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(/\/console\/clusters$/);
}

function psql(uri: string, sql: string): string {
  return execFileSync('psql', [uri, '-XAtqc', sql], { encoding: 'utf8', timeout: 30_000 }).trim();
}

/** An LSN (`X/Y`) as a number. */
function lsn(s: string): bigint {
  const [hi, lo] = s.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

let uri = '';

test('a form without its CSRF token is refused, signed in or not', async ({ page }) => {
  await page.goto('/console/login');
  const before = await page.request.post('/console/login', {
    form: { email: owner, password },
    maxRedirects: 0,
  });
  expect(before.status()).toBe(403);
  await signIn(page, owner);
  const forged = await page.request.post('/console/clusters', {
    form: { name: 'forged', location: 'local-a/region-1', plan: 'small', replicas: '0', durability: 'async', backup_hours: '24', retain_days: '7' },
    maxRedirects: 0,
  });
  expect(forged.status()).toBe(403);
  expect(await forged.text()).toContain('did not come from this console');
});

test('sign in, create a cluster with its estimate, watch it run, query it with psql', async ({ page }) => {
  // The pages work under their content security policy: nothing they load is refused.
  const refused: string[] = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/.test(m.text())) refused.push(m.text());
  });
  await page.goto('/console/login');
  await accessible(page);
  await screenshots(page, 'login');
  await signIn(page, owner);
  await expect(page.getByText('No clusters yet.')).toBeVisible();
  await screenshots(page, 'clusters-empty');

  // The estimate follows the form before anything is submitted.
  const estimate = page.locator('[data-estimate]');
  const onDemand = await estimate.getAttribute('data-estimate');
  await page.getByLabel('Run on spot capacity').check();
  await expect(estimate).not.toHaveAttribute('data-estimate', onDemand!);
  await page.getByLabel('Standbys').fill('2');
  await page.getByLabel('Standbys').press('Tab');
  await expect(page.locator('#estimate')).toContainText('3 members');
  await page.getByLabel('Run on spot capacity').uncheck();
  await page.getByLabel('Standbys').fill('1');
  await page.getByLabel('Standbys').press('Tab');
  await expect(estimate).toHaveAttribute('data-estimate', onDemand!);
  await accessible(page);

  await page.getByLabel('Name').fill('shop');
  await page.getByRole('button', { name: 'Create cluster' }).click();
  await expect(page.getByRole('heading', { name: 'Cluster shop is being created' })).toBeVisible();
  await expect(page.getByText('shown only this once')).toBeVisible();
  // Copied as a user copies it: the button puts it on the clipboard.
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
  await page.getByRole('button', { name: 'Copy Connection string' }).click();
  await expect(page.getByRole('button', { name: 'Copy Connection string' })).toHaveText('Copied');
  uri = await page.evaluate(() => navigator.clipboard.readText());
  expect(uri).toBe(await page.locator('[data-name="connection-uri"]').getAttribute('data-value'));
  expect(uri).toContain('postgres');
  expect(uri).toMatch(/:[^@/]+@/); // the password is in it, this once
  await screenshots(page, 'cluster-created');

  await page.getByRole('link', { name: "Open the cluster's page" }).click();
  // The page refreshes its live part by itself until the cluster runs.
  await expect(page.locator('[data-status="running"]')).toBeVisible({ timeout: 240_000 });
  await expect(page.locator('tr[data-role="standby"]')).toHaveCount(1, { timeout: 120_000 });
  // The page shows the connection string without the password.
  expect(await page.locator('[data-name="connection-uri"]').getAttribute('data-value')).not.toMatch(/:[^@/]+@/);
  expect(psql(uri, 'select 40 + 2')).toBe('42');
  await accessible(page);
  await screenshots(page, 'cluster');
  await page.getByRole('link', { name: 'Clusters', exact: true }).first().click();
  await expect(page.locator('td').getByRole('link', { name: 'shop' })).toBeVisible();
  await accessible(page);
  await screenshots(page, 'clusters');
  expect(refused).toEqual([]);
  const headers = (await page.request.get('/console/clusters/shop')).headers();
  expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
  expect(headers['content-security-policy']).toContain("script-src 'self'");
  expect(headers['cache-control']).toBe('no-store');
});

test('take a backup and restore to a moment', async ({ page }) => {
  await signIn(page, owner);
  psql(uri, 'create table ledger (id int primary key)');
  psql(uri, 'insert into ledger values (1)');
  // The form takes whole seconds: the moment is a second after the first row, truncated.
  await new Promise((r) => setTimeout(r, 1100));
  const target = psql(uri, `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')`);
  // A second later, a row the restore must not have.
  await new Promise((r) => setTimeout(r, 1500));
  psql(uri, 'insert into ledger values (2)');
  const written = lsn(psql(uri, 'select pg_current_wal_lsn()'));

  await page.goto('/console/clusters/shop');
  await page.getByRole('button', { name: 'Take a backup now' }).click();
  await expect(page.getByText('Backup requested')).toBeVisible();
  await expect(async () => {
    await page.reload();
    await expect(page.locator('tr[data-backup]').filter({ hasText: 'manual' }).filter({ hasText: 'complete' })).toHaveCount(1, { timeout: 1000 });
  }).toPass({ timeout: 180_000 });
  await expect(async () => {
    const archived = await page.locator('[data-archived-lsn]').getAttribute('data-archived-lsn', { timeout: 1000 });
    expect(lsn(archived!) >= written).toBe(true);
  }).toPass({ timeout: 60_000 });

  await page.getByLabel("New cluster's name").fill('shop-then');
  await page.getByLabel('Time (UTC)').fill(target);
  await page.getByRole('button', { name: 'Restore' }).click();
  await expect(page.getByRole('heading', { name: 'Cluster shop-then is being restored' })).toBeVisible();
  const restored = (await page.locator('[data-name="connection-uri"]').getAttribute('data-value'))!;
  await page.getByRole('link', { name: "Open the cluster's page" }).click();
  await expect(page.locator('[data-status="running"]')).toBeVisible({ timeout: 240_000 });
  expect(psql(restored, 'select string_agg(id::text, \',\' order by id) from ledger')).toBe('1');
});

test("a cluster's charts draw its connections and transactions as they happen", async ({ page }) => {
  await signIn(page, owner);
  await page.goto('/console/clusters/shop');
  // A session held open and a burst of transactions, while the page refreshes its charts.
  const held = spawn('psql', [uri, '-Xqc', 'select pg_sleep(40)'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 4; i++) {
      psql(uri, 'insert into ledger select 1000 + g from generate_series(1, 50) g on conflict do nothing');
      psql(uri, 'delete from ledger where id >= 1000');
      await new Promise((r) => setTimeout(r, 3000));
    }
    await expect(page.locator('svg[data-chart="tps"] polyline[data-series^="primary"]')).toHaveCount(1, { timeout: 60_000 });
    await expect(page.locator('svg[data-chart="connections"]')).toHaveAttribute('aria-label', /primary \(local-a\) [1-9]/, { timeout: 60_000 });
    await expect(page.locator('svg[data-chart="lag"] polyline[data-series^="standby"]')).toHaveCount(1);
    await expect(page.locator('svg[data-chart="storage"] polyline')).toHaveCount(2);
    await accessible(page);
    await screenshots(page, 'cluster-charts');
  } finally {
    held.kill();
  }
});

test('switch over to the standby', async ({ page }) => {
  await signIn(page, owner);
  await page.goto('/console/clusters/shop');
  const primary = await page.locator('tr[data-role="primary"]').getAttribute('data-instance');
  await page.getByRole('button', { name: 'Switch over to a standby' }).click();
  await expect(page.getByText('Switchover requested')).toBeVisible();
  await expect(page.locator('tr[data-role="primary"]')).not.toHaveAttribute('data-instance', primary!, { timeout: 120_000 });
  await expect(page.locator('[data-status="running"]')).toBeVisible({ timeout: 60_000 });
  await expect(page.getByText('switchover', { exact: false }).first()).toBeVisible();
  expect(psql(uri, 'select count(*) from ledger')).toBe('2');
});

test('add a standby, then move the cluster to another cloud with the same connection string', async ({ page }) => {
  await signIn(page, owner);
  await page.goto('/console/clusters/shop');
  await page.getByLabel('Standbys', { exact: true }).fill('2');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expect(page.getByText('Change requested')).toBeVisible();
  await expect(page.locator('tr[data-role="standby"]')).toHaveCount(2, { timeout: 120_000 });
  await page.getByLabel('Cloud to move to').selectOption('local-b');
  await page.getByRole('button', { name: 'Move' }).click();
  await expect(page.getByText('Move requested')).toBeVisible();
  await expect(async () => {
    const clouds = await page.locator('#live tbody tr[data-role] td:nth-child(3)').allTextContents();
    expect(clouds.length).toBe(3);
    expect(new Set(clouds)).toEqual(new Set(['local-b']));
  }).toPass({ timeout: 240_000 });
  await expect(page.locator('[data-status="running"]')).toBeVisible({ timeout: 60_000 });
  expect(psql(uri, 'select count(*) from ledger')).toBe('2');
});

test('create an API key, see its secret once, revoke it', async ({ page }) => {
  await signIn(page, owner);
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByLabel('Name').fill('ci');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.locator('[data-name="secret"]').getAttribute('data-value'))!;
  const me = () => page.request.get('/v1/me', { headers: { authorization: `Bearer ${secret}` } });
  expect((await me()).status()).toBe(200);
  await accessible(page);
  await screenshots(page, 'api-keys');
  await page.goto('/console/api-keys');
  await expect(page.locator('[data-name="secret"]')).toHaveCount(0); // shown once
  await page.getByRole('button', { name: 'Revoke ci' }).click();
  await expect(page.locator('tr[data-key="ci"]')).toHaveCount(0);
  expect((await me()).status()).toBe(401);
});

test('invite a member, change their role, remove them; the audit log shows it', async ({ page }) => {
  await signIn(page, owner);
  await page.getByRole('link', { name: 'Members' }).click();
  await expect(page.locator(`tr[data-member="${viewer}"]`)).toContainText('viewer');
  await page.getByLabel('Email').fill('dev@acme.test');
  await page.getByLabel('Role', { exact: true }).selectOption('developer');
  await page.getByRole('button', { name: 'Invite' }).click();
  const token = (await page.locator('[data-name="invite-token"]').getAttribute('data-value'))!;
  expect(token).toMatch(/^hri_/);
  await accessible(page);
  await screenshots(page, 'members');
  const row = page.locator('tr[data-member="dev@acme.test"]');
  await expect(row).toContainText('invited');
  await page.getByLabel('Role of dev@acme.test').selectOption('viewer');
  await row.getByRole('button', { name: 'Change' }).click();
  await expect(page.locator('tr[data-member="dev@acme.test"]')).toContainText('viewer');
  await page.getByRole('button', { name: 'Remove dev@acme.test' }).click();
  await expect(page.locator('tr[data-member="dev@acme.test"]')).toHaveCount(0);

  await page.getByRole('link', { name: 'Audit log' }).click();
  await expect(page.locator('tbody tr').first()).toContainText('members/');
  await page.getByLabel('Target starts with').fill('clusters/shop');
  await page.getByRole('button', { name: 'Filter' }).click();
  // What the console did is in the log as API calls, from the browser's address.
  await expect(page.locator('tbody tr').filter({ hasText: 'POST /v1/clusters/{cluster}/switchover' })).toHaveCount(1);
  await expect(page.locator('tbody tr').filter({ hasText: 'switchover' }).first()).toContainText('127.0.0.1');
  await accessible(page);
  await screenshots(page, 'audit');
});

test('usage and invoices: the bill so far, spend per day, the invoice as a PDF', async ({ page }) => {
  await signIn(page, owner);
  await page.getByRole('link', { name: 'Usage' }).click();
  await expect(page.getByRole('heading', { name: 'Usage and invoices' })).toBeVisible();
  await expect(page.locator('figure.chart svg[role="img"]')).toBeVisible();
  // The clusters of this test have run: their time is on the bill so far.
  await expect(async () => {
    await page.reload();
    await expect(page.locator('table').first()).toContainText('shop', { timeout: 1000 });
  }).toPass({ timeout: 60_000 });
  const month = new Date().toISOString().slice(0, 7);
  const pdf = await page.request.get(`/console/invoices/${month}/pdf`);
  expect(pdf.status()).toBe(200);
  expect(pdf.headers()['content-type']).toBe('application/pdf');
  expect((await pdf.body()).subarray(0, 5).toString()).toBe('%PDF-');
  await accessible(page);
  await screenshots(page, 'billing');
});

test('settings: quotas, projects, and a hard limit that the usage page then shows', async ({ page }) => {
  await signIn(page, owner);
  await page.getByRole('link', { name: 'Settings' }).click();
  await expect(page.locator('[data-quota="clusters"]')).toContainText(' of ');
  await expect(page.getByRole('cell', { name: 'default' })).toBeVisible();
  await page.getByLabel('Monthly hard limit').fill('250.50');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByText('Saved.')).toBeVisible();
  await expect(page.getByLabel('Monthly hard limit')).toHaveValue('250.50');
  await accessible(page);
  await screenshots(page, 'settings');
  await page.getByRole('link', { name: 'Usage' }).click();
  await expect(page.getByText('$250.50')).toBeVisible();
  // A bad value is the API's error, and nothing changes.
  const csrf = (await page.locator('meta[name="csrf-token"]').getAttribute('content'))!;
  const bad = await page.request.post('/console/settings/billing', { form: { csrf, hard_limit: '-5' }, maxRedirects: 0 });
  expect(bad.status()).toBe(400);
  await page.goto('/console/settings');
  await expect(page.getByLabel('Monthly hard limit')).toHaveValue('250.50');
  await page.getByLabel('Monthly hard limit').fill('');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByLabel('Monthly hard limit')).toHaveValue('');
});

test("a viewer's pages have no mutating control, and a forged POST is refused", async ({ page }) => {
  await signIn(page, viewer);
  for (const p of ['/console/clusters', '/console/clusters/shop', '/console/members', '/console/settings']) {
    await page.goto(p);
    // The only form is signing out.
    await expect(page.locator('form')).toHaveCount(1);
    await expect(page.locator('form[action="/console/logout"]')).toHaveCount(1);
    for (const hidden of ['API keys', 'Audit log', 'Usage']) {
      await expect(page.getByRole('link', { name: hidden })).toHaveCount(0);
    }
  }
  await screenshots(page, 'cluster-viewer');
  const keys = await page.goto('/console/api-keys');
  expect(keys!.status()).toBe(403);
  await expect(page.getByRole('alert')).toContainText('may not read API keys');
  await page.goto('/console/clusters/shop');
  const csrf = (await page.locator('meta[name="csrf-token"]').getAttribute('content'))!;
  for (const action of ['/console/clusters/shop/switchover', '/console/clusters/shop/backups']) {
    const forged = await page.request.post(action, { form: { csrf }, maxRedirects: 0 });
    expect(forged.status(), action).toBe(403);
  }
  const del = await page.request.post('/console/clusters/shop/delete', { form: { csrf, confirm: 'shop' }, maxRedirects: 0 });
  expect(del.status()).toBe(403);
  await page.goto('/console/clusters/shop');
  await expect(page.locator('[data-status="running"]')).toBeVisible();
});

test('signing out ends the session', async ({ page, context }) => {
  await signIn(page, owner);
  const session = (await context.cookies()).find((c) => c.name === 'hr_session')!;
  expect(session.httpOnly).toBe(true);
  expect(session.sameSite).toBe('Strict');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/console\/login$/);
  await page.goto('/console/clusters');
  await expect(page).toHaveURL(/\/console\/login$/);
  // The session itself is over, not just the cookie.
  const me = await page.request.get('/v1/me', { headers: { authorization: `Bearer ${session.value}` } });
  expect(me.status()).toBe(401);
});

test('deleting takes the typed name', async ({ page }) => {
  await signIn(page, owner);
  await page.goto('/console/clusters/shop-then');
  await page.getByLabel('to confirm').fill('shop');
  await page.getByRole('button', { name: 'Delete cluster' }).click();
  await expect(page.getByText('nothing was deleted')).toBeVisible();
  await page.goto('/console/clusters/shop-then');
  await page.getByLabel('to confirm').fill('shop-then');
  await page.getByRole('button', { name: 'Delete cluster' }).click();
  await expect(page.getByText('The cluster is being deleted.')).toBeVisible();
});
