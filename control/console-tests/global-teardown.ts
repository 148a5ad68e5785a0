// Stops the `highrise up` global-setup.ts started (by its PID: it stops its agents and
// their PostgreSQL servers) and keeps its log beside the test results.
import * as fs from 'node:fs';
import * as path from 'node:path';

export default async function globalTeardown() {
  const pid = Number(process.env.HIGHRISE_UP_PID);
  const work = process.env.HIGHRISE_CONSOLE_WORK;
  if (pid) {
    try {
      process.kill(pid, 'SIGINT');
    } catch {
      // already gone
    }
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (work) {
    const out = path.resolve(__dirname, '../../target/console-tests');
    fs.mkdirSync(out, { recursive: true });
    try {
      fs.copyFileSync(path.join(work, 'up.log'), path.join(out, 'highrise-up.log'));
    } catch {
      // no log
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
}
