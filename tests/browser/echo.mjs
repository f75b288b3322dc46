// Opens the media echo page of a running Consulta echo server in Debian's headless Chromium and
// prints one line `ECHO_RESULT <json>` with the page's getStats numbers.
// Usage: node echo.mjs <server-url> <seconds> [simulcast]
// Never downloads a browser: it runs /usr/bin/chromium (or $CONSULTA_CHROMIUM) and fails without it.
import { mkdtempSync, rmSync } from 'node:fs';
import { launch } from './chromium.mjs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, secondsArg, mode] = process.argv.slice(2);
if (!url) {
  console.error('usage: node echo.mjs <server-url> [seconds] [simulcast]');
  process.exit(2);
}
const seconds = Number(secondsArg ?? 5);
const simulcast = mode === 'simulcast';

const profile = mkdtempSync(join(tmpdir(), 'consulta-chromium-'));
let context;
try {
  context = await launch(profile);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (message) => console.error(`[page ${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
  await page.goto(url);
  const result = await page.evaluate(([s, sim]) => window.runEcho(s, sim), [seconds, simulcast]);
  console.log(`ECHO_RESULT ${JSON.stringify(result)}`);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
