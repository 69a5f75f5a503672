// Drives the demo page in headless Chromium as a person would, then proves a page on an
// origin the token does not allow is refused by the browser's own CORS check.
// Usage: node tests/browser/demo.mjs <gateway-url> <browser-token> <cross-origin-page-url> <artifact-dir> <release-url>
// (<release-url><gate>, POSTed, releases the test upstream's stream held at that gate and says
// how many streams it held there.)
// Exits non-zero (with the reason) on the first failed expectation.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

const [gateway, token, crossOriginPage, artifacts, release] = process.argv.slice(2);
assert.ok(gateway && token && crossOriginPage && artifacts && release,
  "usage: demo.mjs <gateway> <token> <cross-origin-page> <artifact-dir> <release-url>");
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  // playwright gives every launch a fresh, empty profile of its own.
});
const timeout = 20_000;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => console.log(`[page] ${m.type()}: ${m.text()}`));

  await page.goto(`${gateway}/demo/#token=${token}`);
  // On load the page wakes the model.
  await page.waitForFunction(() => document.getElementById("wake-status").textContent === "requested (202)");

  // Sync predict: the model's raw output.
  await page.fill("#input", JSON.stringify({ hello: "browser" }));
  await page.click("#predict");
  await page.waitForFunction(() => document.getElementById("predict-output").textContent.includes("browser"));
  assert.deepEqual(JSON.parse(await page.textContent("#predict-output")), { hello: "browser" });

  // Chat: the upstream holds the answer after its first token until released; the page must
  // show that token while the rest is still held, then the whole answer.
  const gate = `chat-${Date.now()}`;
  await page.fill("#chat-input", "hello streaming world");
  await page.fill("#chat-extra", JSON.stringify({ hold: gate }));
  await page.click("#chat-send");
  await page.waitForFunction(() => document.getElementById("chat-output").textContent === "echo: ");
  assert.equal(await page.textContent("#chat-status"), "streaming…");
  const { held } = await (await fetch(`${release}${gate}`, { method: "POST" })).json();
  assert.equal(held, 1, "the first token rendered while the upstream held the rest");
  await page.waitForFunction(() => document.getElementById("chat-status").textContent === "done");
  assert.equal(await page.textContent("#chat-output"), "echo: hello streaming world");
  console.log("chat panel: first token rendered before the upstream sent the rest: ok");

  // Async: a slow job runs; a second one waits behind it and is canceled while queued.
  await page.fill("#input", JSON.stringify({ sleep_ms: 2500, job: "slow" }));
  await page.click("#submit");
  await page.waitForSelector("#jobs tr:nth-child(1) .status:text-matches('QUEUED|IN_PROGRESS')");
  const slow = await page.getAttribute("#jobs tr:nth-child(1)", "id");
  await page.fill("#input", JSON.stringify({ job: "queued" }));
  await page.click("#submit");
  await page.waitForFunction((slowId) => document.querySelector("#jobs tr")?.id !== slowId, slow);
  const queued = await page.getAttribute("#jobs tr:nth-child(1)", "id");
  assert.match(await page.textContent(`#${queued} .status`), /QUEUED/);
  await page.click(`#${queued} .cancel`);
  await page.waitForSelector(`#${queued} .status:text-is("CANCELED")`);
  assert.equal(await page.getAttribute(`#${queued}`, "data-canceled"), "true");

  // The slow job goes to SUCCEEDED live, with its output and usage.
  await page.waitForSelector(`#${slow} .status:text-is("SUCCEEDED")`, { timeout: 30_000 });
  assert.deepEqual(JSON.parse(await page.textContent(`#${slow} .result`)), { sleep_ms: 2500, job: "slow" });
  assert.match(await page.textContent(`#${slow} .usage`), /ran \d+ ms/);
  assert.equal(await page.textContent("#error"), "");
  await page.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });
  console.log(`demo page: predict, async to SUCCEEDED, cancel of a queued job: ok (${join(artifacts, "demo.png")})`);

  // A page on another origin, with a token minted for the gateway's origin only: the real
  // cross-origin fetch is blocked by the browser's CORS check.
  const other = await browser.newPage();
  other.setDefaultTimeout(timeout);
  await other.goto(crossOriginPage);
  await other.waitForFunction(() => document.getElementById("result").textContent !== "");
  const result = await other.textContent("#result");
  assert.match(result, /^blocked: TypeError/, `cross-origin fetch must be refused by the browser, got: ${result}`);
  // Its own limited token, refused once over its limit: the page reads why and when to retry.
  await other.waitForFunction(() => document.getElementById("limited").textContent !== "");
  const limited = await other.textContent("#limited");
  assert.match(limited,
    /^429 retry-after=\d+ policy="requests_per_minute";q=1;w=60 ratelimit="requests_per_minute";r=0;t=\d+ request-id=true$/,
    `the page reads the 429's fields through CORS, got: ${limited}`);
  await other.screenshot({ path: join(artifacts, "cross-origin.png") });
  console.log(`cross-origin page: ${result}; limited token: ${limited}`);
} finally {
  await browser.close();
}
