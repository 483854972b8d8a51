// Drives Debian's chromium through the start page and its "Try a sign-in" demonstration, as a
// person would, and prints what it saw as one JSON line; tests/api/start_page.rs checks it.
//
// Environment: START_URL (the start page), NODE_ENV_DIR (where playwright-core is installed),
// CHROMIUM (the browser), USER_DATA_DIR (a fresh profile), START_SCREENSHOT and SCREENSHOT (PNGs
// of the start page and of the result page), and PICK_USER: when set, the sign-in goes through
// start-dev's development provider, whose page offers sample users, and the user of that name
// is picked there as a person would.

import { createRequire } from 'node:module';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const require = createRequire(join(env('NODE_ENV_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1100, height: 900 },
});
try {
  context.setDefaultTimeout(30_000);
  const page = context.pages()[0] ?? (await context.newPage());
  // Every top-level navigation, redirects included, and the status of the last document.
  const navigations = [];
  let lastStatus = 0;
  page.on('request', (request) => {
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) navigations.push(request.url());
  });
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) lastStatus = response.status();
  });

  const opened = await page.goto(env('START_URL'));
  const start = { status: opened.status(), html: await page.content(), text: await page.innerText('body') };
  await page.screenshot({ path: env('START_SCREENSHOT'), fullPage: true });

  const pick = process.env.PICK_USER;
  let provider = null;
  if (pick) {
    await Promise.all([
      page.waitForURL((url) => url.pathname.endsWith('/oauth2/v2.0/authorize')),
      page.getByRole('button', { name: 'Try a sign-in' }).click(),
    ]);
    provider = { url: page.url(), text: await page.innerText('body') };
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/demo/callback'),
      page.getByRole('button', { name: `Sign in as ${pick}` }).click(),
    ]);
  } else {
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/demo/callback'),
      page.getByRole('button', { name: 'Try a sign-in' }).click(),
    ]);
  }
  await page.waitForLoadState('load');
  const result = {
    url: page.url(),
    status: lastStatus,
    html: await page.content(),
    text: await page.innerText('body'),
  };
  await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
  process.stdout.write(`${JSON.stringify({ start, provider, result, navigations })}\n`);
} finally {
  await context.close();
}
