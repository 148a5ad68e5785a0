// Full load of console pages in Chromium (bench/run console): navigation timing of each
// URL, LOADS times after a cold first load, against loading the API's JSON for the same
// cluster in the same browser (the baseline). Prints `what|cold|ttfb p50|dcl p50|load p50|load p99` rows (ms).
// Usage: node bench/console-load.mjs BASE_URL KEY CLUSTER LOADS
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../control/console-tests/package.json'));
const { chromium } = require('playwright-core');

const [base, key, cluster, loadsArg] = process.argv.slice(2);
const loads = Number(loadsArg ?? 20);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium' });
const context = await browser.newContext();
// The console forwards its cookie to the API as the caller's key: an API key serves here
// as a session would.
await context.addCookies([{ name: 'hr_session', value: key, url: `${base}/console/` }]);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function measure(what, url, headers) {
  const page = await context.newPage();
  if (headers) await page.setExtraHTTPHeaders(headers);
  const timing = async () => {
    const response = await page.goto(url, { waitUntil: 'load' });
    if (!response.ok()) throw new Error(`${what}: ${response.status()}`);
    return page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return { ttfb: n.responseStart - n.requestStart, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd };
    });
  };
  const cold = await timing();
  const runs = [];
  for (let i = 0; i < loads; i++) runs.push(await timing());
  await page.close();
  const f = (x) => x.toFixed(1);
  console.log(
    [what, f(cold.load), f(pct(runs.map((r) => r.ttfb), 50)), f(pct(runs.map((r) => r.dcl), 50)),
      f(pct(runs.map((r) => r.load), 50)), f(pct(runs.map((r) => r.load), 99))].join('|'),
  );
}

await measure('api json (baseline)', `${base}/v1/clusters/${cluster}`, { authorization: `Bearer ${key}` });
await measure('console cluster page', `${base}/console/clusters/${cluster}`);
await measure('console clusters list', `${base}/console/clusters`);
await browser.close();
