// Follows seed/upgraded-email-2fa-help.txt word for word in headless
// Chromium, finding every element by its visible label, the way a person
// reads the page. Run by tests/integration/browser.rs:
//
//   node tests/browser/help_page.mjs <portal_url> <email> <password> <outdir>
//
// Prints `DEVICE_PASSWORD=<password>` for the SMTP half of the test and
// saves a screenshot per step as <outdir>/NN-step.png. Exits non-zero on
// the first step that does not work.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [portalUrl, email, password, outdir] = process.argv.slice(2);
if (!outdir) {
  console.error('usage: help_page.mjs <portal_url> <email> <password> <outdir>');
  process.exit(2);
}
const NEW_PASSWORD = 'a long new passphrase for spring';

// RFC 6238 TOTP: SHA-1, 6 digits, 30-second steps.
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/\s+/g, '')) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${c}`);
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function totp(secret, unixSeconds) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const mac = crypto.createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(code).padStart(6, '0');
}

// The RFC's own test vectors first: a wrong TOTP would fail later for
// reasons that are hard to see.
const rfcSecret = Buffer.from('12345678901234567890');
for (const [t, code] of [[59, '287082'], [1111111109, '081804'], [2000000000, '279037']]) {
  if (totp(rfcSecret, t) !== code) throw new Error(`TOTP self-test failed at ${t}`);
}

fs.mkdirSync(outdir, { recursive: true });
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mailwarden-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  viewport: { width: 1100, height: 820 },
});
const page = context.pages()[0] ?? (await context.newPage());
// A second browser, signed in to the same account before the password
// change: the change must sign it out.
const otherDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mailwarden-chromium-'));
const other = await chromium.launchPersistentContext(otherDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const otherPage = other.pages()[0] ?? (await other.newPage());
otherPage.setDefaultTimeout(20_000);
page.setDefaultTimeout(20_000);
const problems = [];
page.on('console', (m) => {
  if (m.type() === 'error') problems.push(`console: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

let shot = 0;
let current = 'start';
async function step(name, fn) {
  current = name;
  await fn();
  shot += 1;
  const file = path.join(outdir, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  console.log(`step ${shot}: ${name} (${file})`);
}

const button = (name) => page.getByRole('button', { name, exact: true });
const label = (name) => page.getByLabel(name, { exact: true });
const text = (t) => page.getByText(t, { exact: true });

try {
  await step('sign-in', async () => {
    await page.goto(portalUrl);
    await label('Email').fill(email);
    await label('Password').fill(password);
  });

  await step('blocked-account', async () => {
    await button('Sign in').click();
    const banner = page.getByRole('alert').filter({ hasText: 'Your account has been blocked from sending' });
    await banner.waitFor();
    const said = (await banner.innerText()).trim();
    if (!said.startsWith('Your account has been blocked from sending')) {
      throw new Error(`banner says: ${said}`);
    }
  });

  current = 'other-browser-signs-in';
  await otherPage.goto(portalUrl);
  await otherPage.getByLabel('Email', { exact: true }).fill(email);
  await otherPage.getByLabel('Password', { exact: true }).fill(password);
  await otherPage.getByRole('button', { name: 'Sign in', exact: true }).click();
  await otherPage.getByRole('heading', { name: 'My account', exact: true }).waitFor();

  // STEP 1 - Change Your Password
  await step('change-password', async () => {
    await label('Current password').fill(password);
    await label('New password').fill(NEW_PASSWORD);
    await label('Repeat new password').fill(NEW_PASSWORD);
  });
  await step('password-changed', async () => {
    await button('Change password').click();
    await text('Password changed').waitFor();
  });
  current = 'other-browser-signed-out';
  await otherPage.reload();
  await otherPage.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  console.log('OTHER_BROWSER=signed_out');

  // STEP 3 - Enable Two-factor Authentication (2FA)
  await step('my-account', async () => {
    // Click 'My account' (left menu)
    await page.getByRole('navigation').getByRole('link', { name: 'My account', exact: true }).click();
    await page.getByRole('heading', { name: 'My account', exact: true }).waitFor();
  });
  await step('two-factor-section', async () => {
    // Scroll down to 'Two-factor Authentication'
    await page.getByRole('heading', { name: 'Two-factor Authentication', exact: true }).scrollIntoViewIfNeeded();
  });
  await step('enable-2fa', async () => {
    // Click 'Enable 2FA'
    await button('Enable 2FA').click();
    await button('QR Code').waitFor();
  });
  let key;
  await step('qr-code', async () => {
    // Now click the 'QR Code' button
    await button('QR Code').click();
    const img = page.getByRole('img', { name: 'QR code', exact: true });
    await img.waitFor();
    const src = await img.getAttribute('src');
    if (!src.startsWith('data:image/png;base64,')) throw new Error(`QR image src: ${src.slice(0, 40)}`);
    const width = await img.evaluate((i) => i.naturalWidth);
    if (!(width > 0)) throw new Error('the QR image did not decode');
    key = (await page.locator('dt:text-is("Key") + dd').innerText()).trim();
    if (!/^[A-Z2-7]{4}( [A-Z2-7]{4})+$/.test(key)) throw new Error(`key text: ${key}`);
  });
  await step('otp-entered', async () => {
    // Take that code ... enter it ... in the section 'Verify 2FA' > 'OTP'
    await page.getByRole('heading', { name: 'Verify 2FA', exact: true }).waitFor();
    // The server's clock: the test may run it apart from ours (TOTP_NOW).
    const now = process.env.TOTP_NOW ? Number(process.env.TOTP_NOW) : Date.now() / 1000;
    const code = totp(base32Decode(key), now);
    await label('OTP').fill(code);
  });
  await step('2fa-enabled', async () => {
    // ... then hit Enter on the keyboard
    await label('OTP').press('Enter');
    await text('2FA enabled').waitFor();
    await text('Your account has been unblocked').waitFor();
    if ((await page.content()).includes('has been blocked')) {
      throw new Error('the page still says "has been blocked"');
    }
  });

  // STEP 4 - device password for Outlook
  await step('device-password-name', async () => {
    // under the 'Device passwords' section, just enter a name
    await page.getByRole('heading', { name: 'Device passwords', exact: true }).scrollIntoViewIfNeeded();
    await label('Name').fill('Outlook');
  });
  let devicePassword;
  await step('device-password-created', async () => {
    // Then click 'Create'
    await button('Create').click();
    const shown = page.getByText(/^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$/);
    await shown.waitFor();
    devicePassword = (await shown.innerText()).trim();
    await page.getByText('it will not be shown again').waitFor();
    await shown.scrollIntoViewIfNeeded();
  });

  // Only once: a reload does not show it again.
  current = 'shown-once';
  await page.reload();
  await page.getByRole('heading', { name: 'My account', exact: true }).waitFor();
  if ((await page.content()).includes(devicePassword)) throw new Error('the device password was shown twice');

  // The same page at phone width, whole.
  current = 'phone-width';
  await page.setViewportSize({ width: 390, height: 844 });
  shot += 1;
  const phone = path.join(outdir, `${String(shot).padStart(2, '0')}-phone-width.png`);
  await page.screenshot({ path: phone, fullPage: true });
  console.log(`step ${shot}: phone-width (${phone})`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow}px wider than a phone screen`);

  if (problems.length) throw new Error(problems.join('\n'));
  console.log(`NEW_PASSWORD=${NEW_PASSWORD}`);
  console.log(`DEVICE_PASSWORD=${devicePassword}`);
} catch (e) {
  const file = path.join(outdir, `failed-${current}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  console.error(`FAILED at step "${current}": ${e.message}\n(screenshot: ${file})`);
  process.exitCode = 1;
} finally {
  await context.close();
  await other.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
  fs.rmSync(otherDir, { recursive: true, force: true });
}
