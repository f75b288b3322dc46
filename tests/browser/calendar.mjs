// The calendar page in Debian's headless Chromium, at a phone's width (360 px): a doctor signs in with
// the assistant's link, books with the keyboard, sees the slot in the week and agenda views; the patient
// signs in and sees it too, without the doctor's controls. Screenshots go to the directory given; each
// is decoded again from its file and the booked slot's pixels counted, so the files are what is checked.
//
// Then Element's side of the widget API (matrix-widget-api's ClientWidgetApi, on a stand-in origin)
// embeds the page for the patient in dark mode and hands it an OpenID token, as Element does.
//
// Finally the doctor moves the appointment (to `movedTo`) and cancels it from the page.
//
// Usage: node calendar.mjs '<json: {doctorLink, patientLink, patient, date, time, movedTo, outDir, pageUrl,
//                                   openId: {access_token, expires_in, matrix_server_name, token_type}}>'
// Prints one line `CALENDAR_RESULT <json>`; exits non-zero on any failure.
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.outDir, { recursive: true });
const context = await launch(mkdtempSync(join(tmpdir(), 'consulta-calendar-')));
context.setDefaultTimeout(20000);
const problems = [];
const result = { screenshots: [] };

async function open(url, who) {
  const page = await context.newPage();
  await page.setViewportSize({ width: 360, height: 780 });
  page.on('pageerror', (e) => problems.push(`${who}: page error ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('401')) problems.push(`${who}: console ${m.text()}`);
  });
  await page.goto(url);
  return page;
}

async function ready(page) {
  await page.waitForSelector('body[data-state="ready"]');
}

// Controls without an accessible name, and the contrast of text and of the primary button.
async function audit(page) {
  return page.evaluate(() => {
    const named = (e) =>
      (e.labels && e.labels.length > 0) || e.getAttribute('aria-label') || (e.textContent || '').trim();
    const unlabelled = [...document.querySelectorAll('button, input, select, textarea')]
      .filter((e) => e.type !== 'hidden' && !named(e))
      .map((e) => e.id || e.outerHTML.slice(0, 60));
    const rgb = (s) => s.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => {
      const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (a, b) => { const [x, y] = [lum(rgb(a)), lum(rgb(b))].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
    const body = getComputedStyle(document.body);
    const contrast = { text: ratio(body.color, body.backgroundColor) };
    const primary = document.querySelector('button.primary:not([hidden])');
    if (primary) { const s = getComputedStyle(primary); contrast.primary = ratio(s.color, s.backgroundColor); }
    const card = document.querySelector('.appt');
    if (card) { const s = getComputedStyle(card); contrast.card = ratio(s.color, s.backgroundColor); }
    const overflow = document.documentElement.scrollWidth > document.documentElement.clientWidth;
    return { unlabelled, contrast, overflow };
  });
}

// Saves a screenshot with the slot in view and returns where the slot is in it.
async function shoot(page, name, selector) {
  const slot = page.locator(selector);
  await slot.scrollIntoViewIfNeeded();
  const box = await slot.boundingBox();
  const path = join(cfg.outDir, `${name}.png`);
  await page.screenshot({ path });
  await page.screenshot({ path: join(cfg.outDir, `${name}-full.png`), fullPage: true });
  result.screenshots.push(path);
  return { path, box };
}

// Decodes a saved screenshot in the browser and counts the pixels of the slot's colour inside `box`.
async function slotPixels(shot, colour) {
  const page = await context.newPage();
  const data = readFileSync(shot.path).toString('base64');
  const share = await page.evaluate(async ({ data, box, colour }) => {
    const img = new Image();
    img.src = `data:image/png;base64,${data}`;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width;
    canvas.height = img.height;
    const g = canvas.getContext('2d');
    g.drawImage(img, 0, 0);
    const x = Math.max(0, Math.floor(box.x));
    const y = Math.max(0, Math.floor(box.y));
    const w = Math.min(img.width - x, Math.floor(box.width));
    const h = Math.min(img.height - y, Math.floor(box.height));
    const px = g.getImageData(x, y, w, h).data;
    let hits = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (Math.abs(px[i] - colour[0]) <= 6 && Math.abs(px[i + 1] - colour[1]) <= 6 && Math.abs(px[i + 2] - colour[2]) <= 6) hits += 1;
    }
    // And the same colour outside any slot: the page background must not be mistaken for one.
    const whole = g.getImageData(0, 0, img.width, img.height).data;
    let all = 0;
    for (let i = 0; i < whole.length; i += 4) {
      if (Math.abs(whole[i] - colour[0]) <= 6 && Math.abs(whole[i + 1] - colour[1]) <= 6 && Math.abs(whole[i + 2] - colour[2]) <= 6) all += 1;
    }
    return { inSlot: hits / (w * h), slotPixels: hits, pagePixels: all, size: [img.width, img.height] };
  }, { data, box: shot.box, colour });
  await page.close();
  return share;
}

const VIDEO = [0xe3, 0xf7, 0xf0];
const VIDEO_DARK = [0x0f, 0x3a, 0x2e];
const BUNDLE = new URL('./node_modules/matrix-widget-api/dist/api.min.js', import.meta.url);
const slotOf = (id) => `.appt[data-id="${id}"]`;

// A page opens on the clinic's current week. The test books for tomorrow, which on the clinic's
// Sunday is next week's Monday: then a person goes on a week with "Next week". Each day of the week
// on show has a heading `#day-<date>`.
async function weekOf(page, date) {
  await page.locator('#week section.day').first().waitFor();
  if ((await page.locator(`#week #day-${date}`).count()) === 0) {
    await page.locator('#next').click();
  }
  await page.locator(`#week #day-${date}`).waitFor();
}

try {
  // ---- The doctor. ----
  const doctor = await open(cfg.doctorLink, 'doctor');
  await ready(doctor);
  result.doctorUrlAfterSignIn = doctor.url();
  result.doctorWho = await doctor.textContent('#who');
  const before = await shoot(doctor, 'doctor-week-empty', '#week');
  result.auditBefore = await audit(doctor);

  // To "Book appointment" with the keyboard alone, then fill the dialog.
  let reached = false;
  for (let i = 0; i < 25 && !reached; i += 1) {
    await doctor.keyboard.press('Tab');
    reached = await doctor.evaluate(() => document.activeElement && document.activeElement.id === 'book');
  }
  result.bookReachedByKeyboard = reached;
  await doctor.keyboard.press('Enter');
  await doctor.waitForSelector('#editor[open]');
  result.focusInDialog = await doctor.evaluate(() => document.activeElement.id);
  result.auditDialog = await audit(doctor);
  await doctor.keyboard.type(cfg.patient);
  await doctor.fill('#f-date', cfg.date);
  await doctor.fill('#f-time', cfg.time);
  await doctor.selectOption('#f-length', '45');
  await doctor.fill('#f-reason', 'Follow-up from the calendar');
  await shoot(doctor, 'doctor-booking-dialog', '#editor');
  await doctor.focus('#editor-save');
  await doctor.keyboard.press('Enter');
  await doctor.waitForSelector('#editor:not([open])', { state: 'attached' });
  const slot = doctor.locator(`.appt[data-start^="${cfg.date}T${cfg.time}"]`);
  await slot.waitFor();
  const id = await slot.getAttribute('data-id');
  result.bookedId = id;
  result.doctorSlotText = await slot.innerText();
  result.doctorStatus = await doctor.textContent('#status');
  result.focusAfterBooking = await doctor.evaluate(() => document.activeElement && document.activeElement.dataset.id);
  const doctorWeek = await shoot(doctor, 'doctor-week-booked', slotOf(id));
  result.doctorWeekPixels = await slotPixels(doctorWeek, VIDEO);
  result.emptyWeekPixels = await slotPixels({ path: before.path, box: { x: 0, y: 0, width: 360, height: 780 } }, VIDEO);
  result.auditAfter = await audit(doctor);

  await doctor.click('#view-agenda');
  await doctor.waitForSelector(`#agenda ${slotOf(id)}`);
  const agenda = await shoot(doctor, 'doctor-agenda', `#agenda ${slotOf(id)}`);
  result.doctorAgendaPixels = await slotPixels(agenda, VIDEO);

  // A reload keeps the session (this tab only); the used link does not sign in again.
  await doctor.reload();
  await ready(doctor);
  result.doctorAfterReload = await doctor.textContent('#who');
  const again = await open(cfg.doctorLink, 'second use');
  await again.waitForSelector('body[data-state="signed-out"]');
  result.secondUse = await again.textContent('#error');
  await again.close();

  // ---- The patient, in dark mode as Element would ask. ----
  const patient = await open(cfg.patientLink, 'patient');
  await ready(patient);
  await weekOf(patient, cfg.date);
  const patientSlot = patient.locator(slotOf(id));
  await patientSlot.waitFor();
  result.patientSlotText = await patientSlot.innerText();
  result.patientSeesBook = await patient.isVisible('#book');
  result.patientSlotButtons = await patientSlot.locator('button').count();
  const patientWeek = await shoot(patient, 'patient-week', slotOf(id));
  result.patientWeekPixels = await slotPixels(patientWeek, VIDEO);
  result.auditPatient = await audit(patient);

  // ---- The patient inside "Element": a room widget signed in with the widget API's OpenID token. ----
  const host = await context.newPage();
  await host.setViewportSize({ width: 360, height: 780 });
  host.on('pageerror', (e) => problems.push(`widget host: page error ${e.message}`));
  host.on('console', (m) => { if (m.type() === 'error') problems.push(`widget: console ${m.text()}`); });
  // A stand-in for Element on its own origin (another loopback port: Chromium keeps a public origin
  // from framing a loopback page).
  const server = createServer((req, res) => {
    if (req.url === '/api.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(readFileSync(BUNDLE));
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><html><head><script src="/api.js"></script></head><body style="margin:0"></body></html>');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const HOST = `http://127.0.0.1:${server.address().port}`;
  await host.goto(`${HOST}/room`);
  await host.evaluate(({ pageUrl, openId }) => {
    // The minified bundle exposes a function returning the module (see calendar.js).
    const lib = typeof window.mxwidgets === 'function' ? window.mxwidgets() : window.mxwidgets;
    const { ClientWidgetApi, Widget, WidgetDriver, OpenIDRequestState } = lib;
    class Driver extends WidgetDriver {
      validateCapabilities() { return Promise.resolve(new Set()); }
      askOpenID(observer) {
        window.openIdAsked = (window.openIdAsked || 0) + 1;
        observer.update({ state: OpenIDRequestState.Allowed, token: openId });
      }
    }
    const url = `${pageUrl}?theme=dark&widgetId=consulta_calendar&parentUrl=${encodeURIComponent(window.location.href)}`;
    const iframe = document.createElement('iframe');
    Object.assign(iframe, { src: url, title: 'Calendar', width: 360, height: 780 });
    iframe.style.border = '0';
    document.body.append(iframe);
    const widget = new Widget({
      id: 'consulta_calendar', creatorUserId: '@assistant:clinic.test', type: 'm.custom', url,
      waitForIframeLoad: true, data: {},
    });
    window.clientApi = new ClientWidgetApi(widget, iframe, new Driver());
  }, { pageUrl: cfg.pageUrl, openId: cfg.openId });
  const frame = host.frameLocator('iframe');
  try {
    await frame.locator('body[data-state="ready"]').waitFor({ state: 'attached' });
  } catch (e) {
    problems.push(`widget page: ${await frame.locator('#error').textContent()} / ${await frame.locator('#status').textContent()}`);
    throw e;
  }
  result.widgetWho = await frame.locator('#who').textContent();
  result.widgetOpenIdAsked = await host.evaluate(() => window.openIdAsked || 0);
  result.widgetTheme = await frame.locator('html').getAttribute('data-theme');
  await weekOf(frame, cfg.date);
  const widgetSlot = frame.locator(slotOf(id));
  await widgetSlot.scrollIntoViewIfNeeded();
  result.widgetSlotText = await widgetSlot.innerText();
  const widgetShot = { path: join(cfg.outDir, 'patient-widget-dark.png'), box: await widgetSlot.boundingBox() };
  await host.screenshot({ path: widgetShot.path });
  result.screenshots.push(widgetShot.path);
  result.widgetPixels = await slotPixels(widgetShot, VIDEO_DARK);
  server.close();

  // ---- Back to the doctor: move the appointment half an hour, then cancel it. ----
  await doctor.bringToFront();
  await doctor.click('#view-week');
  await weekOf(doctor, cfg.date);
  await doctor.click(`${slotOf(id)} button:has-text("Reschedule")`);
  await doctor.waitForSelector('#editor[open]');
  result.rescheduleTitle = await doctor.textContent('#editor-title');
  result.reschedulePatientLocked = await doctor.isDisabled('#f-patient');
  await doctor.fill('#f-time', cfg.movedTo);
  await doctor.click('#editor-save');
  await doctor.waitForSelector(`${slotOf(id)}[data-start^="${cfg.date}T${cfg.movedTo}"]`);
  result.movedStatus = await doctor.textContent('#status');
  await doctor.click(`${slotOf(id)} button:has-text("Cancel")`);
  await doctor.waitForSelector('#confirm[open]');
  result.focusInConfirm = await doctor.evaluate(() => document.activeElement.id);
  await doctor.click('#confirm-cancel');
  await doctor.waitForSelector(`${slotOf(id)}.status-cancelled`);
  result.cancelledText = await doctor.locator(slotOf(id)).innerText();
  result.cancelledButtons = await doctor.locator(`${slotOf(id)} button`).count();
  await shoot(doctor, 'doctor-week-cancelled', slotOf(id));
} catch (e) {
  problems.push(`failed: ${e.stack || e}`);
}
result.problems = problems;
console.log(`CALENDAR_RESULT ${JSON.stringify(result)}`);
await context.close();
process.exit(problems.length ? 1 : 0);
