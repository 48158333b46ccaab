// The console's first-load times in headless Chromium, for `toaster bench --scenario
// console` (which starts the app, seeds it and runs this): each run in a new browser
// context (an empty cache), from navigation to the charts drawn. Prints one JSON line.
//
// Env: TOASTER_URL, TOASTER_ADMIN_TOKEN, TOASTER_DEVICE (a device with 30 days of
// data), CHROMIUM, RUNS (default 5).

import { chartsDrawn, launchChromium } from "./browser.mjs";

const URL_BASE = process.env.TOASTER_URL;
const TOKEN = process.env.TOASTER_ADMIN_TOKEN;
const DEVICE = process.env.TOASTER_DEVICE;
const RUNS = Number(process.env.RUNS ?? 5);

const browser = await launchChromium();

/** Milliseconds from navigation to `count` charts drawn, in a fresh context; and the script and style bytes transferred. */
async function firstLoad(path, count) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const started = performance.now();
  await page.goto(`${URL_BASE}${path}#token=${encodeURIComponent(TOKEN)}`);
  await chartsDrawn(page, count, 30000);
  const ms = performance.now() - started;
  const bytes = await page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .filter((e) => e.initiatorType === "script" || e.initiatorType === "link" || /\.(js|css)$/.test(e.name))
      .reduce((sum, e) => sum + e.transferSize, 0),
  );
  await context.close();
  return { ms, bytes };
}

const fleet = [];
const device = [];
let bytes = 0;
for (let i = 0; i < RUNS; i++) {
  const f = await firstLoad("/console/", 1);
  fleet.push(Math.round(f.ms));
  bytes = f.bytes;
  const d = await firstLoad(`/console/devices/${encodeURIComponent(DEVICE)}?range=30d`, 4);
  device.push(Math.round(d.ms));
}
await browser.close();
console.log(JSON.stringify({ fleet_ms: fleet, device_ms: device, script_style_transfer_bytes: bytes }));
