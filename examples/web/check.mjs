#!/usr/bin/env node
// Open index.html in headless Chromium and print what the page computed, and the status line
// it shows (as `status`), as JSON:
//
//   node check.mjs "http://127.0.0.1:8000/index.html?model=explainer.onnx&image=photo.png" \
//       [--screenshot page.png]
//
// Drives the system's Chromium (CHROMIUM, default /usr/bin/chromium) with playwright-core.
import { chromium } from 'playwright-core';

const [url, flag, shot] = process.argv.slice(2);
if (!url || (flag && flag !== '--screenshot')) {
  console.error('usage: node check.mjs URL [--screenshot FILE]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 480 } });
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.__ortCamResult || window.__ortCamError, null,
                             { timeout: 300000 });
  const out = await page.evaluate(() => (window.__ortCamError
    ? { error: window.__ortCamError }
    : { ...window.__ortCamResult, status: document.getElementById('status').textContent }));
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
