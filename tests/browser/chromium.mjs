// Starting Debian's headless Chromium for the browser tests: one place for the flags.
// Never downloads a browser: it runs /usr/bin/chromium (or $CONSULTA_CHROMIUM) and exits without it.
import { chromium } from 'playwright-core';
import { existsSync } from 'node:fs';

export const executablePath = process.env.CONSULTA_CHROMIUM ?? '/usr/bin/chromium';

// Headless on a build machine, with a fake camera and microphone that need no permission prompt.
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];

/** Launches Chromium with a fresh profile directory and `extra` flags; exits 3 if it is missing. */
export async function launch(profile, extra = []) {
  if (!existsSync(executablePath)) {
    console.error(`${executablePath} is missing (apt-get install chromium)`);
    process.exit(3);
  }
  return chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [...FLAGS, ...extra],
  });
}
