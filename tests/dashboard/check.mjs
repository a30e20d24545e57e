// Opens the Switchboard dashboard in the system's headless Chromium and
// checks that the numbers it shows equal the expected ones (taken from
// /metrics by the calling test). Keeps a screenshot.
//
// env: DASHBOARD_URL (with #token=…), EXPECTED (JSON), SCREENSHOT (path)
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.DASHBOARD_URL;
const expected = JSON.parse(process.env.EXPECTED);
const screenshot = process.env.SCREENSHOT;
const profile = mkdtempSync(join(tmpdir(), "switchboard-chromium-"));

// A fresh profile directory each run (Playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 1100 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(url);
  // Two polls: the second draws the rate chart from a difference.
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 2, null, { timeout: 20000 });
  const shown = await page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent.trim();
    const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) =>
      Object.fromEntries([...tr.querySelectorAll("td[data-key]")].map((td) => [td.dataset.key, td.textContent.trim()])));
    return {
      requests: text("total-requests"),
      errors: text("total-errors"),
      rejections: text("total-rejections"),
      tokens_in: text("tokens-in"),
      tokens_out: text("tokens-out"),
      cost: text("total-cost"),
      generation: text("generation"),
      p50_ms: text("p50"),
      endpoints: rows("endpoints-table"),
      tokens: rows("tokens-table"),
      quota: rows("quota-table"),
      login_hidden: document.getElementById("login").hidden,
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(shown));
  const mismatches = [];
  for (const [key, want] of Object.entries(expected)) {
    const got = shown[key];
    if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push(`${key}: shown ${JSON.stringify(got)}, metrics say ${JSON.stringify(want)}`);
  }
  if (!shown.login_hidden) mismatches.push("the login form is still shown");
  if (!/^\d+\.\d\d$/.test(shown.p50_ms)) mismatches.push(`p50 is not a number: ${shown.p50_ms}`);
  if (errors.length) mismatches.push(`page errors: ${errors.join("; ")}`);
  if (mismatches.length) {
    console.error(mismatches.join("\n"));
    failed = true;
  }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
