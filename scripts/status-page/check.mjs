// Loads weir's status page in the system Chromium (headless), sees every
// backend healthy, waits while the driver stops one, sees its row turn
// unhealthy within the health-check interval + 2 s, and takes a screenshot.
//
// Usage: node check.mjs ADMIN_URL BACKEND_COUNT STOPPED_BACKEND STOP_FILE SCREENSHOT
//   ADMIN_URL        e.g. http://127.0.0.1:9901
//   STOPPED_BACKEND  the address whose row must turn unhealthy
//   STOP_FILE        created when the page shows every backend healthy: the
//                    driver then stops that backend
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const [url, count, stopped, stopFile, screenshot] = process.argv.slice(2);
const bound = (ms, what, promise) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error("timed out: " + what)), ms))]);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  const failures = [];
  page.on("requestfailed", (r) => failures.push(r.url()));
  page.on("request", (r) => {
    if (!r.url().startsWith(url)) failures.push("outside request: " + r.url());
  });
  await page.goto(url + "/", { timeout: 10000 });
  await page.waitForFunction(
    (n) => document.querySelectorAll('tr[data-state="healthy"]').length === Number(n),
    count, { timeout: 15000 });
  console.log(`status page: ${count} healthy rows`);
  // Keyboard: the backend tables can be reached with Tab.
  await page.keyboard.press("Tab");
  writeFileSync(stopFile, "stop\n");
  const started = Date.now();
  await page.waitForFunction(
    (address) => document.querySelector(`tr[data-backend="${address}"]`)?.dataset.state === "unhealthy",
    stopped, { timeout: 20000 });
  const seconds = (Date.now() - started) / 1000;
  console.log(`status page: ${stopped} unhealthy after ${seconds.toFixed(1)} s`);
  // The change is an event too; then some seconds of samples, and the picture.
  await page.waitForFunction(
    (address) => [...document.querySelectorAll("#events li[data-event]")].some((li) => li.textContent.includes(address)),
    stopped, { timeout: 10000 });
  await page.waitForTimeout(Number(process.env.HOLD_SECONDS || 2) * 1000);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (failures.length) throw new Error("requests failed or left weir: " + failures.join(", "));
  console.log(JSON.stringify({ unhealthy_after_seconds: seconds }));
} finally {
  await bound(10000, "closing the browser", browser.close());
}
