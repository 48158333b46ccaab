// What the browser tests (console.test.mjs) and the load-time benchmark
// (load-time.mjs) share: Chromium launched as this machine allows, and the wait for
// charts that have drawn.

import { chromium } from "playwright-core";

/** Debian's Chromium (or CHROMIUM), headless, without the background connections a closed network refuses. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Waits until `count` charts have painted their canvases (more than a few pixels each). */
export async function chartsDrawn(page, count, timeout = 20000) {
  await page.waitForFunction(
    (count) => {
      const canvases = [...document.querySelectorAll(".chart canvas")];
      if (canvases.length < count) return false;
      return canvases.every((c) => {
        if (!c.width || !c.height) return false;
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < data.length; i += 4 * 7) if (data[i] !== 0) painted++;
        return painted > 200;
      });
    },
    count,
    { timeout, polling: "raf" },
  );
}
