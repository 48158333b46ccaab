// The console in a real browser: Debian's Chromium driven by Playwright
// (playwright-core), against the app that tests/tests/console.rs starts and seeds.
// Run by that test (`cargo test --test console`), which passes the URL, tokens and
// ids in the environment; screenshots go to TOASTER_SCREENSHOTS.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { chartsDrawn, launchChromium } from "./browser.mjs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests with cargo test --test console`);
  return value;
};
const URL_BASE = env("TOASTER_URL");
const ADMIN = env("TOASTER_ADMIN_TOKEN");
const OPERATOR = env("TOASTER_OPERATOR_TOKEN");
const SHORT = env("TOASTER_SHORT_TOKEN");
const EXPIRED = env("TOASTER_EXPIRED_TOKEN");
const TENANT = env("TOASTER_TENANT");
const DEVICE = env("TOASTER_DEVICE");
const DISABLE_DEVICE = env("TOASTER_DISABLE_DEVICE");
const HOSTILE_DEVICE = env("TOASTER_HOSTILE_DEVICE");
const ROLLOUT = env("TOASTER_ROLLOUT");
const SHOTS = env("TOASTER_SCREENSHOTS");

/** The API, as the test checks what a click did. */
async function api(method, urlPath, token, body) {
  const response = await fetch(URL_BASE + urlPath, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function eventually(check, what, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh tab (its own sessionStorage) that records what must not happen: console
 * errors, uncaught exceptions, failed requests, HTTP errors, CSP violations, dialogs.
 */
async function open({ allowStatus = [], allowFailed = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on("console", (m) => {
    const expected =
      allowStatus.some((s) => m.text().includes(`status of ${s}`)) || (allowFailed && m.text().includes("net::ERR_"));
    if (m.type() === "error" && !expected) {
      problems.push(`console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("dialog", (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on("request", (r) => requests.push(r.url()));
  page.on("requestfailed", (r) => {
    // ERR_ABORTED: a request cut short by the test navigating away, not a failure.
    const error = r.failure()?.errorText;
    if (!allowFailed && error !== "net::ERR_ABORTED") problems.push(`request failed: ${r.url()} ${error}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !allowStatus.includes(r.status())) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const clean = async () => {
    const pwned = await page.evaluate(() => window.__pwned);
    assert.equal(pwned, undefined, "a hostile string ran as script");
    assert.deepEqual(problems, [], "the page had errors");
  };
  return { context, page, problems, requests, clean };
}

/** Opens the sign-in link and waits until the console has signed in. */
async function signInWithLink(page, token) {
  await page.goto(`${URL_BASE}/console/#token=${encodeURIComponent(token)}`);
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

describe("the console", () => {
  test("the sign-in page, then the link toaster up prints signs in without sending the token", async () => {
    const { page, requests, clean, context } = await open();
    await page.goto(`${URL_BASE}/console/`);
    await page.getByRole("form", { name: "sign in" }).waitFor();
    await shot(page, "sign-in");

    await signInWithLink(page, ADMIN);
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    assert.ok(!page.url().includes("token"), `the fragment is gone: ${page.url()}`);
    assert.ok(requests.every((u) => !u.includes(ADMIN)), "no request URL carries the token");
    const stored = await page.evaluate(() => sessionStorage.getItem("toaster.console.token"));
    assert.ok(stored?.includes(ADMIN), "the token is kept in sessionStorage");

    // The fleet: counts and the ingest chart.
    await page.locator(".card .value").first().waitFor();
    const total = await page.locator(".card").filter({ hasText: /^[\d,]+devices$/ }).locator(".value").textContent();
    assert.equal(total.replace(/,/g, ""), "64");
    await chartsDrawn(page, 1);
    await page.getByRole("table", { name: "model" }).getByText("sensor").waitFor();
    await shot(page, "fleet");
    await clean();
    await context.close();
  });

  test("devices: search, filters, sort by last seen, pages", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.getByRole("link", { name: "Devices", exact: true }).click();
    const rows = page.getByRole("table", { name: "devices" }).locator("tbody tr");
    await eventually(async () => (await rows.count()) === 50, "a first page of 50");
    await page.getByRole("button", { name: "Next →" }).click();
    await eventually(async () => (await rows.count()) === 14, "the second page of 14");
    await page.getByRole("button", { name: "← Previous" }).click();
    await eventually(async () => (await rows.count()) === 50, "back to the first page");

    await page.locator("input[name=q]").fill("lamp");
    await page.getByRole("button", { name: "Search" }).click();
    await eventually(async () => (await rows.count()) === 4, "four lamps");
    await page.locator("input[name=q]").fill("");
    await page.locator("input[name=tag]").fill("bulk");
    await page.locator("select[name=sort]").selectOption("last_seen");
    await page.getByRole("button", { name: "Search" }).click();
    await eventually(async () => (await rows.first().textContent()).includes("sensor-"), "sensors only");
    await page.locator("input[name=tag]").fill("");
    await page.getByRole("button", { name: "Search" }).click();
    // Sorted by last seen: the lamps (seen) before the sensors (never seen).
    await eventually(async () => (await rows.first().textContent()).startsWith("lamp-"), "seen devices first");
    await shot(page, "devices");
    await rows.first().getByRole("link").click();
    await page.getByRole("heading", { name: /^Device lamp-/ }).waitFor();
    await clean();
    await context.close();
  });

  test("a device: charts over a month, latest values, state editor, commands with live status", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.goto(`${URL_BASE}/console/devices/${DEVICE}`);
    await page.getByRole("heading", { name: `Device ${DEVICE}` }).waitFor();
    await chartsDrawn(page, 4);
    await page.getByRole("tab", { name: "30d" }).click();
    await chartsDrawn(page, 4);
    await page.locator("[aria-label='latest values'] td", { hasText: "temp_c" }).waitFor();

    // Desired state, edited and applied.
    await page.locator("textarea[name=desired_patch]").fill('{"brightness": 80}');
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByText(/Saved: desired is now version/).waitFor();
    const state = await api("GET", `/v1/devices/${DEVICE}/state`, ADMIN);
    assert.equal(state.body.desired.brightness, 80);

    // A command, sent and followed until the device (a loop in the Rust test) answers.
    await page.locator("input[name=command_name]").fill("reboot");
    await page.locator("input[name=command_parameters]").fill('{"delay_s": 1}');
    await page.getByRole("button", { name: "Send" }).click();
    const commands = await eventually(async () => {
      const list = await api("GET", `/v1/devices/${DEVICE}/commands`, ADMIN);
      return list.body.items.find((c) => c.name === "reboot");
    }, "the command in the API");
    assert.deepEqual(commands.parameters, { delay_s: 1 });
    await page.locator(`tr[data-command='${commands.id}'] .status`, { hasText: "succeeded" }).waitFor({ timeout: 15000 });

    await page.locator("[aria-label='device audit'] td", { hasText: "command.sent" }).first().waitFor();
    await page.locator("[aria-label='ota history']").waitFor();
    await shot(page, "device");
    await clean();
    await context.close();
  });

  test("disable and enable a device by clicking, with a confirmation", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.goto(`${URL_BASE}/console/devices/${DISABLE_DEVICE}`);
    await page.getByRole("button", { name: "Disable" }).click();
    await page.getByRole("button", { name: "Yes, disable" }).click();
    await eventually(async () => (await api("GET", `/v1/devices/${DISABLE_DEVICE}`, ADMIN)).body.status === "disabled", "disabled");
    await page.getByRole("button", { name: "Enable" }).click();
    await eventually(async () => (await api("GET", `/v1/devices/${DISABLE_DEVICE}`, ADMIN)).body.status === "active", "active again");
    await page.getByRole("button", { name: "Disable" }).waitFor();
    await clean();
    await context.close();
  });

  test("firmware and a rollout: progress per stage, pause and resume", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.getByRole("link", { name: "Firmware & rollouts" }).click();
    await page.getByRole("link", { name: ROLLOUT }).waitFor();
    await shot(page, "firmware");
    await page.getByRole("link", { name: ROLLOUT }).click();
    await page.getByRole("heading", { name: `Rollout ${ROLLOUT}` }).waitFor();
    const stages = page.locator("[aria-label=stages] tbody tr");
    await eventually(async () => (await stages.count()) === 2, "two stages");
    const first = await stages.first().textContent();
    assert.match(first, /1: 75%/);

    await page.getByRole("button", { name: "Pause" }).click();
    await page.getByRole("button", { name: "Yes, pause" }).click();
    await eventually(async () => (await api("GET", `/v1/ota/rollouts/${ROLLOUT}`, ADMIN)).body.state === "paused", "paused");
    await page.locator("[data-state=paused]").waitFor();
    await page.getByRole("button", { name: "Resume" }).click();
    await eventually(async () => (await api("GET", `/v1/ota/rollouts/${ROLLOUT}`, ADMIN)).body.state === "active", "active");
    await page.locator("[data-state=active]").waitFor();
    await shot(page, "rollout");
    await clean();
    await context.close();
  });

  test("a release and a rollout created with the forms, stages edited", async () => {
    // One 422 is expected: the bad version below.
    const { page, clean, context } = await open({ allowStatus: [422] });
    await signInWithLink(page, ADMIN);
    await page.getByRole("link", { name: "Firmware & rollouts" }).click();
    const release = page.getByRole("form", { name: "new firmware" });
    await release.locator("input[name=firmware_model]").fill("sensor");
    await release.locator("input[name=firmware_version]").fill("1.1.0");
    await release.locator("input[name=firmware_url]").fill("https://firmware.example.com/sensor-1.1.0.bin");
    await release.locator("input[name=firmware_sha256]").fill("cd".repeat(32));
    await release.locator("input[name=firmware_size]").fill("524288");
    await release.getByRole("button", { name: "Create release" }).click();
    const created = await release.locator(".ok").textContent({ timeout: 10000 });
    const firmwareId = created.match(/fw_[0-9a-f]{16}/)[0];
    const firmware = await api("GET", `/v1/ota/firmware/${firmwareId}`, ADMIN);
    assert.equal(firmware.body.version, "1.1.0");

    // A bad value is refused with the field named, and nothing is created.
    await release.locator("input[name=firmware_model]").fill("sensor");
    await release.locator("input[name=firmware_version]").fill("not-a-version");
    await release.getByRole("button", { name: "Create release" }).click();
    await release.getByRole("alert").getByText("/version").waitFor();

    const rollout = page.getByRole("form", { name: "new rollout" });
    await rollout.locator("select[name=rollout_firmware]").selectOption(firmwareId);
    await rollout.locator("input[name=rollout_channel]").fill("beta");
    await rollout.getByRole("button", { name: "remove stage 2" }).click();
    await rollout.getByLabel("stage 1 percent").fill("5");
    await rollout.getByRole("button", { name: "Start rollout" }).click();
    await page.getByRole("heading", { name: /^Rollout ro_/ }).waitFor();
    const id = page.url().split("/").pop();
    const started = await api("GET", `/v1/ota/rollouts/${id}`, ADMIN);
    assert.deepEqual(started.body.stages, [5, 50, 100]);
    assert.equal(started.body.selector.channel, "beta");
    await clean();
    await context.close();
  });

  test("the audit log, filtered", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.getByRole("link", { name: "Audit", exact: true }).click();
    const rows = page.getByRole("table", { name: "audit entries" }).locator("tbody tr");
    await rows.first().waitFor();
    await page.locator("input[name=audit_action]").fill("device.");
    await page.getByRole("button", { name: "Filter" }).click();
    await eventually(async () => {
      const actions = await rows.locator("td:nth-child(3)").allTextContents();
      return actions.length > 0 && actions.every((a) => a.startsWith("device."));
    }, "only device entries");
    await shot(page, "audit");
    await clean();
    await context.close();
  });

  test("hostile strings from devices and admins render as text, and no script runs", async () => {
    const { page, clean, context } = await open();
    await signInWithLink(page, ADMIN);
    await page.goto(`${URL_BASE}/console/devices/${HOSTILE_DEVICE}`);
    await page.getByRole("heading", { name: `Device ${HOSTILE_DEVICE}` }).waitFor();
    // The state (as values and as member names) and the command's output, as text.
    const panel = page.locator("[aria-label=state]");
    await panel.getByText("<script>window.__pwned='script'</script>", { exact: false }).first().waitFor();
    await page.locator("[aria-label=commands]").getByText("onerror", { exact: false }).first().waitFor();
    await shot(page, "hostile-device");
    // And the pages that list what admins and devices wrote (audit details, firmware).
    await page.getByRole("link", { name: "Audit", exact: true }).click();
    await page.getByRole("table", { name: "audit entries" }).locator("tbody tr").first().waitFor();
    await page.getByRole("link", { name: "Firmware & rollouts" }).click();
    await page.getByRole("link", { name: ROLLOUT }).waitFor();
    assert.equal(await page.locator("img[src=x]").count(), 0, "no markup was made of a string");
    assert.equal(await page.locator("#app script").count(), 0);
    await clean();
    await context.close();
  });

  test("an operator picks a tenant; the tenant's name renders as text", async () => {
    const { page, clean, context } = await open();
    await page.goto(`${URL_BASE}/console/`);
    await page.locator("textarea[name=token]").fill(OPERATOR);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Choose a tenant" }).waitFor();
    await page.getByText("Globex <img src=x", { exact: false }).waitFor();
    assert.equal(await page.locator("img[src=x]").count(), 0);
    await shot(page, "tenants");
    await page.getByRole("button", { name: new RegExp(`\\(${TENANT}\\)`) }).click();
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    await page.locator(`[data-tenant=${TENANT}]`).waitFor();
    await page.getByRole("button", { name: "Switch tenant" }).click();
    await page.getByRole("heading", { name: "Choose a tenant" }).waitFor();
    const audit = await api("GET", "/v1/audit?action=token.minted", ADMIN);
    assert.ok(audit.body.items.some((a) => a.action === "token.minted"), "the operator's admin token is audited");
    await clean();
    await context.close();
  });

  test("an expired or revoked token brings the sign-in page back with a message", async () => {
    const { page, clean, context } = await open({ allowStatus: [401] });
    // A link with an expired token: refused, said.
    await page.goto(`${URL_BASE}/console/#token=${encodeURIComponent(EXPIRED)}`);
    await page.getByRole("status").getByText(/not valid \(expired/).waitFor();
    await page.getByRole("form", { name: "sign in" }).waitFor();

    // A session whose token expired while the tab was closed.
    await signInWithLink(page, ADMIN);
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    await page.evaluate(() => {
      const stored = JSON.parse(sessionStorage.getItem("toaster.console.token"));
      stored.me.expires_at = new Date(Date.now() - 1000).toISOString();
      sessionStorage.setItem("toaster.console.token", JSON.stringify(stored));
    });
    await page.reload();
    await page.getByRole("status").getByText("Your session has expired. Sign in again.").waitFor();

    // A token revoked while a page is open: the next refresh gets 401.
    await signInWithLink(page, SHORT);
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    const revoked = await api("POST", "/v1/auth/revoke", OPERATOR, { token: SHORT });
    assert.equal(revoked.status, 204, JSON.stringify(revoked));
    await page.getByRole("status").getByText(/expired or the token was revoked/).waitFor({ timeout: 15000 });
    await page.getByRole("form", { name: "sign in" }).waitFor();
    await shot(page, "signed-out-expired");
    // The revoked token never signs in again.
    await page.locator("textarea[name=token]").fill(SHORT);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").getByText(/not valid/).waitFor();
    await clean();
    await context.close();
  });

  test("sign-out forgets the token; an unreachable server is said, and recovered from", async () => {
    // The API calls aborted on purpose below are the only failures allowed.
    const { page, clean, context } = await open({ allowFailed: true });
    await signInWithLink(page, ADMIN);
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    await page.locator(".card .value").first().waitFor();

    // Requests to the API fail: the banner says so and the last figures stay.
    await page.route("**/v1/**", (route) => route.abort("connectionrefused"));
    const banner = page.locator(".banner");
    await banner.getByText(/cannot be reached/).waitFor({ timeout: 15000 });
    assert.ok(await page.locator(".card .value").first().isVisible());
    await page.unroute("**/v1/**");
    await banner.waitFor({ state: "detached", timeout: 15000 });

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("form", { name: "sign in" }).waitFor();
    await page.getByText("You have signed out.").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await clean();
    await context.close();
  });
});
