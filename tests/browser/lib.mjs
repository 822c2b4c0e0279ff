// Shared by the browser scripts: start Debian's Chromium through playwright-core (which
// never downloads a browser of its own here), and small helpers for the widget's shadow DOM.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * Headless Chromium with the flags this machine needs. playwright-core's launch() gives every
 * run a fresh temporary --user-data-dir of its own and removes it on close.
 *
 * Announces the browser's version, on stderr for the log and as `BROWSER <version>` on stdout
 * for tests/e2e_widget.rs: apt installs whatever Chromium Debian ships that day, and a layout
 * result means little without the version that produced it.
 */
export async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  const version = browser.version();
  step(`Chromium ${version} (${CHROMIUM})`);
  tell(`BROWSER ${version}`);
  return browser;
}

/** Fails the run with a clear message. */
export class Failure extends Error {}

export function check(cond, message) {
  if (!cond) throw new Failure(message);
}

/** Logs a step on stderr; stdout is reserved for lines the Rust test reads. */
export function step(text) {
  process.stderr.write(`[browser] ${text}\n`);
}

/** A line for the orchestrating test (tests/e2e_widget.rs reads stdout). */
export function tell(line) {
  process.stdout.write(line + '\n');
}

/** Polls `fn` (run in the page) until it returns a truthy value; the value is returned. */
export async function waitInPage(page, what, fn, arg, timeoutMs = 30000) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    let snapshot = null;
    try {
      snapshot = await page.evaluate(() => window.SwitchboardWidget && window.SwitchboardWidget.state());
    } catch {
      // page gone
    }
    throw new Failure(
      `timed out after ${timeoutMs} ms waiting for ${what}; widget state: ${JSON.stringify(snapshot)}`,
    );
  }
}

/** The widget's state() from its test hook. */
export function widgetState(page) {
  return page.evaluate(() => window.SwitchboardWidget.state());
}

/** Runs `main`, exits 0 on success and 1 with the message on any failure or after `limitMs`. */
export function run(main, limitMs) {
  const timer = setTimeout(() => {
    process.stderr.write(`FAIL: the browser test took longer than ${limitMs} ms\n`);
    process.exit(1);
  }, limitMs);
  main().then(
    () => {
      clearTimeout(timer);
      process.exit(0);
    },
    (err) => {
      clearTimeout(timer);
      process.stderr.write(`FAIL: ${err instanceof Failure ? err.message : err && err.stack ? err.stack : err}\n`);
      process.exit(1);
    },
  );
}
