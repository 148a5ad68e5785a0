// The console in a real browser: Playwright drives Debian's Chromium (Playwright's own
// browser download cannot work on machines without general network access) against a
// real `highrise up` that global-setup.ts starts on free loopback ports.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: '.',
  // One `highrise up` serves every test; the tests run in order, a user's day.
  workers: 1,
  fullyParallel: false,
  timeout: 300_000,
  expect: { timeout: 15_000 },
  reporter: [['list'], ['junit', { outputFile: '../../target/console-tests/junit.xml' }]],
  outputDir: '../../target/console-tests/results',
  globalSetup: './global-setup.ts',
  globalTeardown: './global-teardown.ts',
  use: {
    baseURL: process.env.HIGHRISE_CONSOLE_URL,
    browserName: 'chromium',
    launchOptions: { executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    actionTimeout: 30_000,
    trace: 'retain-on-failure',
  },
});
