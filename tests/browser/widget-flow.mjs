// The widget's whole visitor flow in headless Chromium, against a running Switchboard whose
// demo page (`/`) embeds the widget. Run by tests/e2e_widget.rs, which plays the responder
// (a real Matrix client) at the same time and reads the lines this script prints on stdout:
//
//   BROWSER <version>  the Chromium this run uses (printed by launch() in lib.mjs)
//   ROOM <room id>     the conversation started (the responder can accept its offer now)
//   DONE               every check passed
//
// Environment:
//   SWITCHBOARD_URL    base URL of Switchboard (required)
//   EXPECT_MODE        guest | accounts | proxied: what /api/v1/config must announce (default guest)
//   TOPIC              topic ID to pick (default support)
//   RESPONDER_NAME     the name the responder's messages must show (default Rae)
//   SCREENSHOT_DIR     if set, widget.png and widget-mobile.png are written there, and
//                      browser-version.txt naming the Chromium that took them
//   FAILURE_DIR        if set, failure.png is written there when a check fails
//
// The texts below are shared with tests/e2e_widget.rs; change them in both places.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, Failure, launch, run, step, tell, waitInPage, widgetState } from './lib.mjs';

const BASE = (process.env.SWITCHBOARD_URL || '').replace(/\/+$/, '');
const EXPECT_MODE = process.env.EXPECT_MODE || 'guest';
const TOPIC = process.env.TOPIC || 'support';
const RESPONDER = process.env.RESPONDER_NAME || 'Rae';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '';
const FAILURE_DIR = process.env.FAILURE_DIR || '';

const FIRST = 'Hello from the browser';
const REPLY = 'Hi, this is Rae.';
const XSS_TEXT = 'bold and safe';
const OFFLINE = 'Sent while offline';
const BACK = 'Welcome back';
const HANDOFF_ASK = 'Could someone from sales help me?';
const SAM_REPLY = 'Sam from sales here.';
const BYE = 'Thanks, that is all.';

async function main() {
  check(BASE, 'SWITCHBOARD_URL is not set');
  const browser = await launch();
  const problems = []; // CSP violations and uncaught page errors, reported at the end
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    // Any CSP violation is a failure: the widget must work under the demo page's policy.
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        (window.__csp = window.__csp || []).push(`${e.violatedDirective} blocked ${e.blockedURI}`);
      });
    });
    page = await context.newPage();
    page.on('console', (msg) => {
      const text = msg.text();
      if (/Content Security Policy|Refused to (load|execute|apply|connect|frame)/i.test(text)) {
        problems.push(`CSP console message: ${text}`);
      }
    });
    page.on('pageerror', (err) => problems.push(`uncaught error in the page: ${err.message}`));
    const typingRequests = [];
    page.on('request', (req) => {
      if (req.method() === 'POST' && /\/api\/v1\/conversations\/[^/]+\/typing$/.test(req.url())) {
        let body = null;
        try {
          body = JSON.parse(req.postData() || 'null');
        } catch {
          // recorded as null
        }
        const entry = { typing: body && body.typing, status: null };
        typingRequests.push(entry);
        req.response().then((r) => (entry.status = r ? r.status() : null), () => {});
      }
    });

    // --- the demo page, with its CSP ------------------------------------------------------
    step(`opening ${BASE}/`);
    const res = await page.goto(BASE + '/', { waitUntil: 'load' });
    check(res && res.ok(), `the demo page answered ${res && res.status()}`);
    const csp = res.headers()['content-security-policy'] || '';
    check(/script-src 'self'/.test(csp), `the demo page sends no strict CSP: "${csp}"`);
    step(`CSP: ${csp}`);

    // --- keyboard and screen reader basics ---------------------------------------------------
    const launcher = page.locator('button.launcher');
    await launcher.waitFor({ timeout: 15000 });
    check((await launcher.getAttribute('aria-label')) === 'Chat with us', 'the launcher has no accessible name');
    check((await launcher.getAttribute('aria-expanded')) === 'false', 'launcher: aria-expanded should be false');
    await launcher.click();
    const dialog = page.locator('[role="dialog"]');
    await dialog.waitFor({ state: 'visible', timeout: 5000 });
    const labelled = await page.evaluate(() => {
      const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
      const d = root.querySelector('[role="dialog"]');
      const title = root.getElementById(d.getAttribute('aria-labelledby'));
      const log = root.querySelector('[role="log"]');
      const status = root.querySelector('[role="status"]');
      const unnamed = [...root.querySelectorAll('button')].filter(
        (b) => !(b.getAttribute('aria-label') || b.textContent.trim()),
      ).length;
      return {
        title: title && title.textContent,
        logLive: log && log.getAttribute('aria-live'),
        statusLive: status && status.getAttribute('aria-live'),
        unnamed,
      };
    }, null);
    check(labelled.title === 'Chat with us', `the dialog is not labelled by its title: ${JSON.stringify(labelled)}`);
    check(labelled.logLive === 'polite' && labelled.statusLive === 'polite', `no polite live regions: ${JSON.stringify(labelled)}`);
    check(labelled.unnamed === 0, `${labelled.unnamed} button(s) without an accessible name`);
    await waitInPage(page, 'focus in the message input when the panel opens', () => {
      const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
      return root.activeElement && root.activeElement.id === 'sb-input';
    }, null, 5000);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden', timeout: 5000 });
    await waitInPage(page, 'focus back on the launcher after Escape', () => {
      const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
      return root.activeElement && root.activeElement.classList.contains('launcher');
    }, null, 5000);
    await page.keyboard.press('Enter'); // the focused launcher opens the panel again
    await dialog.waitFor({ state: 'visible', timeout: 5000 });

    // --- topic picker -------------------------------------------------------------------------
    step('waiting for the topics');
    await waitInPage(page, 'the topics', () => {
      const sel = document.querySelector('[data-switchboard-widget]').shadowRoot.getElementById('sb-topic');
      return [...sel.options].some((o) => o.value);
    }, null, 15000);
    const mode = (await widgetState(page)).visitorMode;
    check(mode === EXPECT_MODE, `config announces visitor_mode ${mode}, expected ${EXPECT_MODE}`);
    await page.locator('#sb-topic').selectOption(TOPIC);

    // --- send, typing out -----------------------------------------------------------------------
    const input = page.locator('#sb-input');
    await input.click();
    await input.pressSequentially(FIRST, { delay: 15 });
    await input.press('Enter');
    step('sent the first message; waiting for the conversation');
    const room = await waitInPage(page, 'a conversation room', () => window.SwitchboardWidget.state().roomId, null, 30000);
    tell(`ROOM ${room}`);
    await waitInPage(page, 'the first message to be confirmed', (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.sender === 'me' && m.body === text && !m.pending && m.eventId),
    FIRST);
    // Typing notifications start on the next keystroke now that there is a room.
    await input.pressSequentially('x', { delay: 10 });
    await page.waitForTimeout(300);
    await input.press('Backspace');
    await page.waitForTimeout(500);

    // --- the responder: typing, a reply, an XSS payload -----------------------------------------
    step('waiting for the responder to type');
    const typingText = await waitInPage(page, `"${RESPONDER} is typing…"`, (name) => {
      const t = window.SwitchboardWidget.state().typing;
      return t.startsWith(name + ' is typing') ? t : null;
    }, RESPONDER, 60000);
    check(!typingText.includes('@'), `the typing indicator shows a Matrix ID: ${typingText}`);
    step('waiting for the reply');
    await waitInPage(page, 'the reply, without a reload', (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.sender === 'them' && m.body.includes(text)),
    REPLY, 30000);
    await waitInPage(page, 'the formatted message', (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.sender === 'them' && m.body.includes(text)),
    XSS_TEXT, 30000);
    await page.waitForTimeout(500); // give any injected handler the chance to run
    const xss = await page.evaluate(() => {
      const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
      const them = [...root.querySelectorAll('.msg.them')];
      const bold = [...root.querySelectorAll('.msg.them b, .msg.them strong')].map((b) => ({
        text: b.textContent,
        weight: Number(getComputedStyle(b).fontWeight),
      }));
      const links = [...root.querySelectorAll('.msg.them a')].map((a) => ({
        href: a.getAttribute('href'),
        rel: a.getAttribute('rel'),
        target: a.getAttribute('target'),
      }));
      return {
        xss: window.__xss === undefined ? null : String(window.__xss),
        dangerous: root.querySelectorAll('img, script, iframe, style:not(:empty), object, embed').length,
        handlers: [...root.querySelectorAll('.msg *')].filter((el) =>
          [...el.attributes].some((a) => /^on/i.test(a.name) || a.name === 'style' || a.name === 'src'),
        ).length,
        names: them.map((m) => (m.querySelector('.name') || {}).textContent),
        bold,
        links,
      };
    }, null);
    step(`formatted message rendered as ${JSON.stringify(xss)}`);
    check(xss.xss === null, `the XSS payload ran: window.__xss = ${xss.xss}`);
    check(xss.dangerous === 0, `${xss.dangerous} dangerous element(s) in the widget`);
    check(xss.handlers === 0, `${xss.handlers} element(s) kept event-handler/style/src attributes`);
    check(xss.bold.some((b) => b.text === 'bold' && b.weight >= 600), `"bold" is not rendered bold: ${JSON.stringify(xss.bold)}`);
    check(
      xss.links.every((l) => /^https?:|^mailto:/.test(l.href || 'https:') && (!l.href || l.rel === 'noopener noreferrer')),
      `unsafe link kept: ${JSON.stringify(xss.links)}`,
    );
    check(xss.links.some((l) => l.href === 'https://example.org/' && l.target === '_blank'), `safe link lost: ${JSON.stringify(xss.links)}`);
    check(xss.names.every((n) => n === RESPONDER), `responder shown as ${JSON.stringify(xss.names)}, expected ${RESPONDER}`);
    check((await widgetState(page)).status === 'connected', `status is ${(await widgetState(page)).status}, expected connected`);
    step(`typing requests: ${JSON.stringify(typingRequests)}`);
    check(typingRequests.some((r) => r.typing === true), 'the widget never sent a typing notification');
    // Typing goes through Switchboard in both modes (Synapse refuses m.typing from guests):
    // it starts, is accepted for the visitor's own conversation, and stops again.
    check(typingRequests.some((r) => r.typing === true && r.status === 204),
      `typing notifications were refused: ${JSON.stringify(typingRequests)}`);
    check(typingRequests.some((r) => r.typing === false), 'the widget never stopped its typing notification');

    if (SCREENSHOT_DIR) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'widget.png') });
      step(`screenshot: ${join(SCREENSHOT_DIR, 'widget.png')}`);
    }

    // --- reload: the same conversation ------------------------------------------------------------
    step('reloading');
    await page.reload({ waitUntil: 'load' });
    await launcher.click();
    await waitInPage(page, 'the same conversation after the reload', ([room, texts]) => {
      const s = window.SwitchboardWidget.state();
      return s.roomId === room && texts.every((t) => s.messages.some((m) => m.body.includes(t)));
    }, [room, [FIRST, REPLY, XSS_TEXT]], 30000);
    await waitInPage(page, 'connected after the reload', () => window.SwitchboardWidget.state().status === 'connected', null, 15000);

    // --- network drop: send while offline, nothing lost or doubled ------------------------------
    step('going offline');
    await context.setOffline(true);
    await waitInPage(page, 'the offline state', () => window.SwitchboardWidget.state().status === 'offline', null, 15000);
    await input.click();
    await input.fill(OFFLINE);
    await input.press('Enter');
    await page.waitForTimeout(2500);
    const whileOffline = (await widgetState(page)).messages.filter((m) => m.body === OFFLINE);
    check(whileOffline.length === 1 && whileOffline[0].pending && !whileOffline[0].failed,
      `the offline message should wait, pending: ${JSON.stringify(whileOffline)}`);
    step('back online');
    await context.setOffline(false);
    await waitInPage(page, 'the offline message to be delivered', (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.body === text && !m.pending && m.eventId),
    OFFLINE, 45000);
    await waitInPage(page, 'the reply after reconnecting', (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.sender === 'them' && m.body.includes(text)),
    BACK, 45000);
    await waitInPage(page, 'connected again', () => window.SwitchboardWidget.state().status === 'connected', null, 15000);
    await page.waitForTimeout(1500); // a late duplicate would show up now
    const final = await widgetState(page);
    for (const text of [FIRST, REPLY, XSS_TEXT, OFFLINE, BACK]) {
      const n = final.messages.filter((m) => m.body.includes(text)).length;
      check(n === 1, `"${text}" is shown ${n} times, expected once`);
    }
    const ids = final.messages.map((m) => m.eventId).filter(Boolean);
    check(new Set(ids).size === ids.length, 'an event is shown twice');
    const domCount = await page.evaluate(() => document.querySelector('[data-switchboard-widget]').shadowRoot.querySelectorAll('.msg').length, null);
    check(domCount === final.messages.length, `${domCount} bubbles for ${final.messages.length} messages`);

    // --- hand-off: Rae hands over to sales; Sam answers in the same room ------------------------
    step('asking for sales; the responder hands the conversation over');
    await input.click();
    await input.fill(HANDOFF_ASK);
    await input.press('Enter');
    await waitInPage(page, 'the "transferred" state while Sam is asked', () => {
      const s = window.SwitchboardWidget.state();
      return s.status === 'transferred' && s.conversation && s.conversation.state === 'transferring';
    }, null, 30000);
    await waitInPage(page, "Sam's reply", (text) =>
      window.SwitchboardWidget.state().messages.some((m) => m.sender === 'them' && m.body === text),
    SAM_REPLY, 45000);
    const handed = await widgetState(page);
    check(handed.roomId === room, `the hand-off changed the room: ${handed.roomId}`);
    check(handed.status === 'transferred' && /Now talking with Sam/.test(handed.statusText),
      `after the hand-off the status should name Sam: ${handed.status} "${handed.statusText}"`);
    check(handed.conversation.transfers === 1 && handed.conversation.responder === 'Sam',
      `the room's status after the hand-off: ${JSON.stringify(handed.conversation)}`);
    const samName = await page.evaluate((text) => {
      const root = document.querySelector('[data-switchboard-widget]').shadowRoot;
      const bubble = [...root.querySelectorAll('.msg')].find((b) => b.textContent.includes(text));
      const name = bubble && bubble.querySelector('.name');
      return name ? name.textContent : null;
    }, SAM_REPLY);
    check(samName === 'Sam', `Sam's reply should be signed "Sam", got ${JSON.stringify(samName)}`);

    // --- Sam ends the conversation: the widget says so -------------------------------------------
    await input.click();
    await input.fill(BYE);
    await input.press('Enter');
    await waitInPage(page, 'the "closed" state after Sam ends the conversation', () => {
      const s = window.SwitchboardWidget.state();
      return s.status === 'closed' && s.conversation && s.conversation.state === 'closed';
    }, null, 30000);

    // --- phones: the panel fills the screen -----------------------------------------------------
    // The demo page as it is, at two common phone widths; then a host page wider than the phone
    // (plenty of real sites are), scrolled, which the widget cannot fix but must cope with.
    await onPhone(browser, 375, { screenshot: true }, problems);
    await onPhone(browser, 320, {}, problems);
    await onPhone(browser, 375, { hostWidth: 600 }, problems);
    if (SCREENSHOT_DIR) {
      writeFileSync(join(SCREENSHOT_DIR, 'browser-version.txt'),
        `widget.png and widget-mobile.png: tests/browser/widget-flow.mjs in headless Chromium ${browser.version()}\n`);
    }

    const csp2 = await page.evaluate(() => window.__csp || []);
    problems.push(...csp2.map((v) => `CSP violation: ${v}`));
    check(problems.length === 0, problems.join('; '));
    tell('DONE');
  } catch (err) {
    if (FAILURE_DIR && page) {
      try {
        mkdirSync(FAILURE_DIR, { recursive: true });
        await page.screenshot({ path: join(FAILURE_DIR, 'failure.png') });
        process.stderr.write(`[browser] failure screenshot: ${join(FAILURE_DIR, 'failure.png')}\n`);
      } catch {
        // the page may be gone
      }
    }
    if (problems.length && !(err instanceof Failure && err.message === problems.join('; '))) {
      err.message += ` (also: ${problems.join('; ')})`;
    }
    throw err;
  } finally {
    await browser.close();
  }
}

/**
 * Opens the demo page on a phone `width` px wide (720 px tall; a mobile viewport, touch) and
 * checks that the launcher is on the screen and that the open panel covers exactly the screen.
 *
 * "The screen" is the visual viewport: what the visitor sees, and what Playwright's
 * boundingBox() is relative to. It is not innerWidth: when a page is wider than a phone, mobile
 * Chromium widens the layout viewport (innerWidth, and what `position: fixed` is placed in) to the
 * page, so a page 391 px wide on a 375 px phone reports innerWidth 391, and comparing the page
 * with innerWidth could never fail. clientWidth stays at the width the page was laid out for.
 *
 * With `hostWidth`, an element that wide is added to the page and the page is scrolled, as a
 * visitor would pan around a host page that does not fit the phone.
 */
async function onPhone(browser, width, { hostWidth = 0, screenshot = false }, problems) {
  const height = 720;
  const what = `on a ${width} px phone${hostWidth ? ` with a ${hostWidth} px wide host page, scrolled` : ''}`;
  const mobile = await browser.newContext({ viewport: { width, height }, isMobile: true, hasTouch: true });
  try {
    const phone = await mobile.newPage();
    phone.on('pageerror', (err) => problems.push(`uncaught error ${what}: ${err.message}`));
    await phone.goto(BASE + '/', { waitUntil: 'load' });
    if (hostWidth) {
      await phone.evaluate((hostW) => {
        const wide = document.createElement('div');
        wide.style.cssText = `width: ${hostW}px; height: 10px`;
        document.body.prepend(wide);
        // Bring the middle of the page into view, as a visitor panning there would. (scrollTo()
        // would move only the layout viewport, which is as wide as the page here.)
        const spot = document.createElement('span');
        spot.style.cssText = `position: absolute; left: ${hostW / 2}px; top: 600px`;
        document.body.append(spot);
        spot.scrollIntoView({ block: 'center', inline: 'center' });
      }, hostWidth);
    }
    const page = await phone.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      clientWidth: document.documentElement.clientWidth,
      innerWidth,
      visual: [visualViewport.offsetLeft, visualViewport.offsetTop, visualViewport.width, visualViewport.height],
    }));
    step(`${what}: ${JSON.stringify(page)}`);
    check(page.clientWidth === width, `${what}: the page was laid out ${page.clientWidth} px wide: ${JSON.stringify(page)}`);
    if (hostWidth) {
      // The situation under test really arose: the layout viewport is wider than the screen,
      // and the screen shows a part of the page away from its top left corner.
      check(page.innerWidth > width && page.visual[0] > 0 && page.visual[1] > 0,
        `${what}: the page did not overflow and scroll as intended: ${JSON.stringify(page)}`);
    } else {
      check(page.scrollWidth <= page.clientWidth,
        `${what}: the demo page is ${page.scrollWidth} px wide and overflows: ${JSON.stringify(page)}`);
    }

    const launcherBox = await phone.locator('button.launcher').boundingBox();
    check(launcherBox && launcherBox.x >= 0 && launcherBox.y >= 0 &&
      launcherBox.x + launcherBox.width <= width && launcherBox.y + launcherBox.height <= height,
      `${what}: the launcher is not on the screen: ${JSON.stringify(launcherBox)}`);
    // A tap where the visitor sees the launcher. Not locator.click(): it would scroll the
    // launcher into view first, and its hit test uses layout-viewport coordinates
    // (elementFromPoint), which are off by the visual viewport's offset on a panned page.
    await phone.touchscreen.tap(launcherBox.x + launcherBox.width / 2, launcherBox.y + launcherBox.height / 2);
    await phone.locator('[role="dialog"]').waitFor({ state: 'visible', timeout: 5000 });
    const box = await phone.locator('[role="dialog"]').boundingBox();
    // Half a pixel for sub-pixel viewport offsets; the defect this catches was 4 to 31 px.
    const near = (a, b) => Math.abs(a - b) < 0.5;
    check(box && near(box.x, 0) && near(box.y, 0) && near(box.width, width) && near(box.height, height),
      `${what}: the panel should fill the screen (0, 0, ${width} x ${height}), got ${JSON.stringify(box)}`);
    if (screenshot && SCREENSHOT_DIR) {
      await waitInPage(phone, 'the topics on the phone', () =>
        [...document.querySelector('[data-switchboard-widget]').shadowRoot.getElementById('sb-topic').options].some((o) => o.value), null, 15000);
      await phone.screenshot({ path: join(SCREENSHOT_DIR, 'widget-mobile.png') });
    }
  } finally {
    await mobile.close();
  }
}

run(main, 240000);
