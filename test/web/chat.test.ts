/**
 * The chat page, end to end: the page the gateway serves at `/`, driven in headless Chromium
 * (Debian's `chromium` package, through playwright-core) against a real gateway on port 0.
 *
 * What the page shows is compared with what the gateway stored: the answer's text content must be
 * the stored events' text rendered by the page's own Markdown renderer, so a character lost or
 * doubled anywhere (live stream, reload, second tab, reconnection) fails a test.
 *
 * Screenshots of a finished conversation (light, dark, 360 px wide) go to test-results/web/.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY, mayOfferDevKey } from '../../src/gateway/static.js';
import { renderMarkdown } from '../../web/markdown.js';
import { expectedText, sleep, TcpProxy } from '../client/helpers.js';
import { EVENTS_QUERY, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const HAS_CHROMIUM = existsSync(CHROMIUM);
const SKIP_REASON = `skipped: ${CHROMIUM} is missing (install Debian's chromium package: apt-get install -y chromium)`;
const ARTIFACTS = join(ROOT, 'test-results', 'web');
/** The machine is a closed network: without these, Chromium's own background connections fail the launch. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

interface StoredEvent {
  seq: number;
  turn: number;
  type: string;
  chunk: string | null;
  error: string | null;
  errorCode: string | null;
}

const CONVERSATION_QUERY = `query($id: ID!) { conversation(conversationId: $id) { status lastSeq turns { turn status } messages { turn role content } } }`;

beforeAll(() => {
  // The page under test is the one built from these sources, whatever dist/ held before.
  execFileSync(process.execPath, [join(ROOT, 'web', 'build.mjs')], { cwd: ROOT, stdio: 'pipe' });
});

describe('the web route', () => {
  let fixed: TestGateway;
  let generated: TestGateway;

  beforeAll(async () => {
    fixed = await startTestGateway();
    generated = await startTestGateway({ LONGRUN_API_KEY: '' });
  });
  afterAll(async () => {
    await fixed?.stop();
    await generated?.stop();
  });

  const base = (gateway: TestGateway): string => `http://127.0.0.1:${gateway.endpoints.port}`;

  it('serves the page with a strict Content-Security-Policy and no caching of the HTML', async () => {
    const response = await fetch(`${base(fixed)}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(response.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'");
    expect(CONTENT_SECURITY_POLICY).toContain("style-src 'self'");
    expect(CONTENT_SECURITY_POLICY).toContain("connect-src 'self' ws: wss:");
    expect(CONTENT_SECURITY_POLICY).toContain("default-src 'none'");
    expect(CONTENT_SECURITY_POLICY).not.toContain('unsafe');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await response.text();
    expect(html).not.toMatch(/\{\{|https?:\/\//); // placeholders filled, nothing from elsewhere
    expect(html).not.toMatch(/<script>|style=/); // no inline code for the policy to refuse

    const head = await fetch(`${base(fixed)}/`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const etag = response.headers.get('etag')!;
    expect((await fetch(`${base(fixed)}/`, { headers: { 'if-none-match': etag } })).status).toBe(304);
  });

  it('serves the bundled assets with their content types; hashed names are cached for good', async () => {
    const html = await (await fetch(`${base(fixed)}/`)).text();
    const script = /src="(\/assets\/app-[A-Z0-9]+\.js)"/.exec(html)?.[1];
    const styles = /href="(\/assets\/styles-[A-Z0-9]+\.css)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    expect(styles).toBeDefined();
    for (const [path, type] of [
      [script!, 'text/javascript; charset=utf-8'],
      [styles!, 'text/css; charset=utf-8'],
    ] as const) {
      const response = await fetch(`${base(fixed)}${path}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe(type);
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect((await response.arrayBuffer()).byteLength).toBeGreaterThan(1000);
    }
    const icon = await fetch(`${base(fixed)}/assets/favicon.svg`);
    expect(icon.headers.get('content-type')).toBe('image/svg+xml');
    expect(icon.headers.get('cache-control')).toBe('no-cache');
  });

  it('answers 404 JSON for unknown assets and for every spelling of a way out of the folder', async () => {
    const unknown = await fetch(`${base(fixed)}/assets/nope.js`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect((await unknown.json()).errors[0].errorType).toBe('NotFound');

    // Raw request paths, as a hostile client would send them (fetch would normalise the dots).
    for (const path of [
      '/assets/../package.json',
      '/assets/%2e%2e/package.json',
      '/assets/..%2fpackage.json',
      '/assets/..%5cpackage.json',
      '/assets/%2e%2e%2f%2e%2e%2fpackage.json',
      '/assets//etc/passwd',
      '/assets/.%2e/.%2e/package.json',
      '/assets/..\\..\\package.json',
      '/assets/',
    ]) {
      const { status, body } = await rawGet(fixed.endpoints.port, path);
      expect(status, path).toBe(404);
      expect(body, path).not.toContain('"name": "longrun"');
      expect(() => JSON.parse(body), path).not.toThrow();
    }
    expect((await fetch(`${base(fixed)}/`, { method: 'POST' })).status).toBe(405);
    // Paths the page does not own are left to the other routes.
    expect((await fetch(`${base(fixed)}/healthz`)).status).toBe(200);
    expect((await (await fetch(`${base(fixed)}/nope`)).json()).errors[0].errorType).toBe('NotFound');
  });

  it('offers the dev key in /app-config.json only when the gateway generated it, and not to other sites', async () => {
    const configured = await fetch(`${base(fixed)}/app-config.json`);
    expect(configured.status).toBe(200);
    expect(await configured.json()).toEqual({ graphqlPath: '/graphql' });
    expect(configured.headers.get('cache-control')).toBe('no-store');
    expect(configured.headers.get('access-control-allow-origin')).toBeNull();

    const offered = await fetch(`${base(generated)}/app-config.json`);
    expect(await offered.json()).toEqual({ graphqlPath: '/graphql', devApiKey: generated.apiKey });
    expect(generated.gateway.apiKey.generated).toBe(true);
    // No CORS: another origin's script cannot read it; a DNS name other than localhost is what a
    // DNS-rebinding page would send.
    expect(offered.headers.get('access-control-allow-origin')).toBeNull();
    const rebound = await rawGet(generated.endpoints.port, '/app-config.json', { host: 'attacker.example:80' });
    expect(JSON.parse(rebound.body)).toEqual({ graphqlPath: '/graphql' });
    const crossSite = await rawGet(generated.endpoints.port, '/app-config.json', { 'sec-fetch-site': 'cross-site' });
    expect(JSON.parse(crossSite.body)).toEqual({ graphqlPath: '/graphql' });
    const localhost = await rawGet(generated.endpoints.port, '/app-config.json', { host: `localhost:${generated.endpoints.port}` });
    expect(JSON.parse(localhost.body).devApiKey).toBe(generated.apiKey);
  });

  it('offers the dev key only to loopback connections with an IP or localhost Host', () => {
    const request = (remoteAddress: string, headers: Record<string, string>) => ({ socket: { remoteAddress }, headers });
    expect(mayOfferDevKey(request('127.0.0.1', { host: '127.0.0.1:4000' }))).toBe(true);
    expect(mayOfferDevKey(request('::ffff:127.0.0.1', { host: 'localhost:4000', 'sec-fetch-site': 'same-origin' }))).toBe(true);
    expect(mayOfferDevKey(request('::1', { host: '[::1]:4000' }))).toBe(true);
    // A gateway bound to 0.0.0.0 does not hand its key to the network.
    expect(mayOfferDevKey(request('192.168.1.20', { host: '192.168.1.10:4000' }))).toBe(false);
    expect(mayOfferDevKey(request('::ffff:10.0.0.5', { host: '10.0.0.1:4000' }))).toBe(false);
    expect(mayOfferDevKey(request('127.0.0.1', { host: 'rebound.attacker.example:4000' }))).toBe(false);
    expect(mayOfferDevKey(request('127.0.0.1', { host: '127.0.0.1:4000', 'sec-fetch-site': 'cross-site' }))).toBe(false);
    expect(mayOfferDevKey(request('127.0.0.1', {}))).toBe(false);
  });
});

describe(HAS_CHROMIUM ? 'the chat page in headless Chromium' : `the chat page in headless Chromium (${SKIP_REASON})`, () => {
  let gateway: TestGateway;
  let context: BrowserContext;
  let userDataDir: string;
  let base: string;

  beforeAll(async () => {
    if (!HAS_CHROMIUM) {
      console.warn(`test/web/chat.test.ts: ${SKIP_REASON}`);
      return;
    }
    // The generated dev key: the page gets it from /app-config.json, as after `npm start`.
    gateway = await startTestGateway({ LONGRUN_API_KEY: '', LONGRUN_SIM_TOKENS_PER_SEC: '400' });
    base = `http://127.0.0.1:${gateway.endpoints.port}`;
    userDataDir = mkdtempSync(join(tmpdir(), 'longrun-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 860 },
    });
    context.setDefaultTimeout(20_000);
    mkdirSync(ARTIFACTS, { recursive: true });
  });

  afterAll(async () => {
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await gateway?.stop();
  });

  /** A fresh page on `url`, its local storage emptied; console errors and page errors are collected. */
  async function open(url = `${base}/`): Promise<{ page: Page; problems: string[] }> {
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(url);
    await page.evaluate(() => localStorage.clear());
    await page.reload();
    await page.locator('#prompt').waitFor();
    return { page, problems };
  }

  async function send(page: Page, prompt: string): Promise<void> {
    await page.locator('#prompt').fill(prompt);
    await page.locator('#prompt').press('Enter');
  }

  async function conversationIdOf(page: Page): Promise<string> {
    await page.waitForFunction(() => /^#\/c\/.+/.test(location.hash));
    return decodeURIComponent((await page.evaluate(() => location.hash)).slice('#/c/'.length));
  }

  const turn = (page: Page, number: number) => page.locator(`.turn[data-turn="${number}"]`);

  async function waitForStatus(page: Page, number: number, status: string, timeout = 20_000): Promise<void> {
    await page.locator(`.turn[data-turn="${number}"][data-status="${status}"]`).waitFor({ timeout });
  }

  async function storedEvents(conversationId: string): Promise<StoredEvent[]> {
    const { body } = await gateway.graphql(EVENTS_QUERY, { conversationId });
    expect(body.errors).toBeUndefined();
    return body.data.conversationEvents as StoredEvent[];
  }

  async function storedText(conversationId: string, turnNumber: number): Promise<string> {
    const events = await storedEvents(conversationId);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    return events
      .filter((event) => event.turn === turnNumber && event.type === 'CHUNK')
      .map((event) => event.chunk)
      .join('');
  }

  async function conversation(conversationId: string): Promise<any> {
    const { body } = await gateway.graphql(CONVERSATION_QUERY, { id: conversationId });
    return body.data.conversation;
  }

  /** The text content the page must show for `text`: the page's renderer, parsed by the browser. */
  async function renderedTextOf(page: Page, text: string): Promise<string> {
    return page.evaluate((html) => {
      const container = document.createElement('div');
      container.innerHTML = html;
      return container.textContent ?? '';
    }, renderMarkdown(text));
  }

  async function expectAnswerMatchesStore(page: Page, conversationId: string, turnNumber: number): Promise<string> {
    const stored = await storedText(conversationId, turnNumber);
    const shown = await turn(page, turnNumber).locator('.answer').textContent();
    expect(shown).toBe(await renderedTextOf(page, stored));
    return stored;
  }

  it.skipIf(!HAS_CHROMIUM)('streams an answer and a follow-up that match the stored text, and keeps them across a reload', async () => {
    const { page, problems } = await open();
    // The dev key was offered and taken: no settings prompt, no notice.
    await expect.poll(() => page.locator('#notice').isHidden()).toBe(true);
    expect(await page.locator('#settings').evaluate((dialog: HTMLDialogElement) => dialog.open)).toBe(false);

    const first = 'Tell me about the fox and the river [tokens=120] [rate=300]';
    await send(page, first);
    await waitForStatus(page, 1, 'COMPLETE');
    const id = await conversationIdOf(page);
    const firstText = await expectAnswerMatchesStore(page, id, 1);
    expect(firstText).toBe(expectedText(first));
    await expect.poll(() => turn(page, 1).locator('[data-metric="ttft"]').textContent()).toMatch(/^first token \d+(\.\d+)? m?s$/);
    expect(await turn(page, 1).locator('[data-metric="rate"]').textContent()).toMatch(/^\d+(\.\d)? tokens\/s$/);
    expect(await turn(page, 1).locator('[data-metric="tokens"]').textContent()).toBe('120 tokens');
    expect(await page.locator('#prompt').inputValue()).toBe('');

    // Shift+Enter is a new line, not a send.
    await page.locator('#prompt').press('a');
    await page.locator('#prompt').press('Shift+Enter');
    await page.locator('#prompt').press('b');
    expect(await page.locator('#prompt').inputValue()).toBe('a\nb');
    expect(await page.locator('.turn').count()).toBe(1);

    const second = 'And then what happened?\nKeep it short. [tokens=60] [rate=300]';
    await send(page, second);
    await waitForStatus(page, 2, 'COMPLETE');
    const secondText = await expectAnswerMatchesStore(page, id, 2);
    expect(secondText).toBe(expectedText(second, [{ role: 'user', content: first }, { role: 'assistant', content: firstText }]));
    expect(await turn(page, 2).locator('.prompt-text').textContent()).toBe(second);

    // The list has the conversation, titled by its first prompt, and marks it as the open one.
    const link = page.locator('#conversation-list a');
    expect(await link.count()).toBe(1);
    expect(await link.textContent()).toBe(first);
    expect(await link.getAttribute('aria-current')).toBe('page');

    // After a reload the history comes from the conversation's messages.
    await page.reload();
    await waitForStatus(page, 2, 'COMPLETE');
    await expectAnswerMatchesStore(page, id, 1);
    await expectAnswerMatchesStore(page, id, 2);
    expect(await turn(page, 1).locator('.prompt-text').textContent()).toBe(first);
    await expect.poll(() => turn(page, 2).locator('[data-metric="tokens"]').textContent()).toBe('60 tokens');

    // A finished conversation, as people see it.
    await page.locator('#prompt').fill('');
    await page.screenshot({ path: join(ARTIFACTS, 'chat-light.png') });
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: join(ARTIFACTS, 'chat-dark.png') });
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).not.toBe('rgb(246, 247, 249)');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 360, height: 760 });
    // Nothing is wider than the screen: no sideways scrolling on a phone.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
    expect(await page.locator('#toggle-sidebar').isVisible()).toBe(true);
    expect(await page.locator('#send').isVisible()).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, 'chat-360px.png') });
    await page.locator('#toggle-sidebar').click();
    expect(await page.locator('#toggle-sidebar').getAttribute('aria-expanded')).toBe('true');
    await expect.poll(() => page.locator('#conversation-list a').isVisible()).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, 'chat-360px-list.png'), animations: 'disabled' });
    await page.keyboard.press('Escape');
    await expect.poll(() => page.locator('#conversation-list a').isVisible()).toBe(false);

    // No CSP violation, no script error, no failed request along the way.
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('Stop (button or Escape) cancels the turn on the server; the partial answer matches the store', async () => {
    const { page } = await open();
    await send(page, 'Count the stars slowly [rate=20] [tokens=2000]');
    await expect.poll(async () => (await turn(page, 1).locator('.answer').textContent())?.length ?? 0).toBeGreaterThan(10);
    expect(await page.locator('#stop').isVisible()).toBe(true);
    expect(await page.locator('#send').isDisabled()).toBe(true);
    // The streaming answer is a live region, busy until it is whole.
    expect(await turn(page, 1).locator('.answer').getAttribute('aria-live')).toBe('polite');
    expect(await turn(page, 1).locator('.answer').getAttribute('aria-busy')).toBe('true');
    expect(await turn(page, 1).locator('.badge').textContent()).toBe('Streaming…');
    await expect.poll(() => turn(page, 1).locator('[data-metric="rate"]').textContent()).toMatch(/^≈ \d+(\.\d)? tokens\/s$/);
    await page.screenshot({ path: join(ARTIFACTS, 'chat-streaming.png') });
    await page.locator('#stop').click();
    await waitForStatus(page, 1, 'CANCELLED');
    const id = await conversationIdOf(page);
    expect((await conversation(id)).status).toBe('CANCELLED');
    await expectAnswerMatchesStore(page, id, 1);
    expect(await turn(page, 1).locator('.badge').textContent()).toBe('Stopped');
    expect(await turn(page, 1).locator('.answer').getAttribute('aria-busy')).toBe('false');
    await expect.poll(() => page.locator('#stop').isHidden()).toBe(true);

    await send(page, 'Once more, slowly [rate=20] [tokens=2000]');
    await expect.poll(async () => (await turn(page, 2).locator('.answer').textContent())?.length ?? 0).toBeGreaterThan(10);
    await page.keyboard.press('Escape');
    await waitForStatus(page, 2, 'CANCELLED');
    const server = await conversation(id);
    expect(server.status).toBe('CANCELLED');
    expect(server.turns).toEqual([
      { turn: 1, status: 'CANCELLED' },
      { turn: 2, status: 'CANCELLED' },
    ]);
    await expectAnswerMatchesStore(page, id, 2);
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('a reload, and a second tab, in the middle of an answer show it whole, nothing missing or doubled', async () => {
    const { page } = await open();
    const prompt = 'Tell me a long story [rate=40] [tokens=300]';
    await send(page, prompt);
    const id = await conversationIdOf(page);
    await expect.poll(async () => (await turn(page, 1).locator('.answer').textContent())?.length ?? 0).toBeGreaterThan(40);

    // Away to a new conversation and back through the list: the answer is picked up again.
    await page.locator('#new-conversation').click();
    await expect.poll(() => page.locator('#empty-state').isVisible()).toBe(true);
    expect(await page.locator('.turn').count()).toBe(0);
    await page.locator('#conversation-list a').first().click();
    await waitForStatus(page, 1, 'RUNNING');
    expect(await page.evaluate(() => decodeURIComponent(location.hash))).toBe(`#/c/${id}`);

    const second = await context.newPage();
    await second.goto(`${base}/#/c/${encodeURIComponent(id)}`);
    await page.reload();
    // Both pick the answer up while it is still being written.
    expect((await conversation(id)).status).toBe('RUNNING');
    await waitForStatus(page, 1, 'RUNNING');
    await expect.poll(async () => (await turn(second, 1).locator('.answer').textContent())?.length ?? 0).toBeGreaterThan(40);
    expect((await conversation(id)).status).toBe('RUNNING');

    await waitForStatus(page, 1, 'COMPLETE', 30_000);
    await waitForStatus(second, 1, 'COMPLETE', 30_000);
    const stored = await expectAnswerMatchesStore(page, id, 1);
    await expectAnswerMatchesStore(second, id, 1);
    expect(stored).toBe(expectedText(prompt));
    expect(await turn(page, 1).locator('.prompt-text').textContent()).toBe(prompt);
    await second.close();
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('shows the model error, live and after a reload', async () => {
    const { page } = await open();
    await send(page, 'This one fails [fail-after=5]');
    await waitForStatus(page, 1, 'ERROR');
    const id = await conversationIdOf(page);
    const failure = (await storedEvents(id)).find((event) => event.type === 'ERROR')!;
    expect(failure.error).toBeTruthy();
    expect(await turn(page, 1).locator('.turn-error-message').textContent()).toBe(failure.error);
    expect(await turn(page, 1).locator('.turn-error-code').textContent()).toBe(`(${failure.errorCode})`);
    await expectAnswerMatchesStore(page, id, 1);
    expect(await turn(page, 1).locator('.badge').textContent()).toBe('Failed');
    await page.screenshot({ path: join(ARTIFACTS, 'chat-model-error.png') });

    await page.reload();
    await waitForStatus(page, 1, 'ERROR');
    await expect.poll(() => turn(page, 1).locator('.turn-error-message').textContent()).toBe(failure.error);
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('a refused key says so and points at the settings, where the dev key can be taken back', async () => {
    const { page } = await open();
    await page.locator('#open-settings').click();
    await page.locator('#api-key').fill('da2-thisisnotthekeythisisnotthe');
    await page.locator('#api-key').press('Enter');
    await expect.poll(() => page.locator('#settings').evaluate((dialog: HTMLDialogElement) => dialog.open)).toBe(false);
    expect(await page.evaluate(() => localStorage.getItem('longrun.apiKey'))).toBe('da2-thisisnotthekeythisisnotthe');

    await send(page, 'Hello [tokens=5]');
    await expect.poll(() => page.locator('#notice-text').textContent()).toBe('The gateway refused the API key. Check the key in Settings.');
    expect(await page.locator('#notice').getAttribute('role')).toBe('alert');
    // Nothing was started: the prompt is back in the box, no turn is left on screen.
    expect(await page.locator('#prompt').inputValue()).toBe('Hello [tokens=5]');
    expect(await page.locator('.turn').count()).toBe(0);
    expect(await page.evaluate(() => location.hash)).toBe('');
    expect(await page.locator('#conversation-list a').count()).toBe(0);
    await page.screenshot({ path: join(ARTIFACTS, 'chat-key-refused.png') });

    await page.locator('#notice-action').click();
    await expect.poll(() => page.locator('#settings').evaluate((dialog: HTMLDialogElement) => dialog.open)).toBe(true);
    await page.locator('#use-dev-key').click();
    expect(await page.locator('#api-key').inputValue()).toBe(gateway.apiKey);
    await page.locator('#save-settings').click();
    expect(await page.evaluate(() => localStorage.getItem('longrun.apiKey'))).toBeNull();
    await page.locator('#send').click();
    await waitForStatus(page, 1, 'COMPLETE');
    await expectAnswerMatchesStore(page, await conversationIdOf(page), 1);
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('a conversation the gateway does not know is reported, and can be dropped from the list', async () => {
    const { page } = await open();
    await page.evaluate(() =>
      localStorage.setItem('longrun.conversations', JSON.stringify([{ id: 'gone-1234', title: 'An old one', updatedAt: 1 }])),
    );
    await page.goto(`${base}/#/c/gone-1234`);
    await expect.poll(() => page.locator('#notice-text').textContent()).toMatch(/^This conversation does not exist on this gateway/);
    expect(await page.locator('#conversation-list a').textContent()).toBe('An old one');
    await page.locator('#notice-action').click();
    await expect.poll(() => page.locator('#conversation-list a').count()).toBe(0);
    expect(await page.evaluate(() => location.hash)).toBe('#/');
    await page.close();
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('without a dev key on offer, the page asks for the key and keeps it', async () => {
    const fixed = await startTestGateway();
    try {
      const { page } = await open(`http://127.0.0.1:${fixed.endpoints.port}/`);
      await expect.poll(() => page.locator('#settings').evaluate((dialog: HTMLDialogElement) => dialog.open)).toBe(true);
      expect(await page.locator('#settings-reason').textContent()).toBe('Enter the API key of this gateway to start.');
      expect(await page.locator('#dev-key-note').isHidden()).toBe(true);
      await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('api-key');
      await page.screenshot({ path: join(ARTIFACTS, 'chat-settings.png') });
      await page.locator('#api-key').fill(fixed.apiKey);
      await page.locator('#save-settings').click();
      expect(await page.evaluate(() => localStorage.getItem('longrun.apiKey'))).toBe(fixed.apiKey);
      await send(page, 'Hello there [tokens=12]');
      await waitForStatus(page, 1, 'COMPLETE');
      expect(await turn(page, 1).locator('.answer').textContent()).toBe(await renderedTextOf(page, expectedText('Hello there [tokens=12]')));
      await page.close();
    } finally {
      await fixed.stop();
    }
  }, 60_000);

  it.skipIf(!HAS_CHROMIUM)('a dropped connection shows "Reconnecting…", and the answer goes on with nothing lost', async () => {
    const proxy = await TcpProxy.start(gateway.endpoints.port);
    try {
      const { page } = await open(`http://127.0.0.1:${proxy.port}/`);
      await send(page, 'A story across a network failure [rate=40] [tokens=200]');
      const id = await conversationIdOf(page);
      await expect.poll(async () => (await turn(page, 1).locator('.answer').textContent())?.length ?? 0).toBeGreaterThan(20);
      expect(await page.locator('#connection').getAttribute('data-state')).toBe('live');

      proxy.mode = 'refuse';
      proxy.sever();
      await expect.poll(() => page.locator('#connection').getAttribute('data-state')).toBe('reconnecting');
      expect(await page.locator('#connection').textContent()).toBe('Reconnecting…');
      expect(await page.locator('#connection').isVisible()).toBe(true);
      await page.screenshot({ path: join(ARTIFACTS, 'chat-reconnecting.png') });
      await sleep(1_500);
      expect(await page.locator('#connection').getAttribute('data-state')).toBe('reconnecting');
      proxy.mode = 'forward';

      await expect.poll(() => page.locator('#connection').getAttribute('data-state'), { timeout: 15_000 }).toMatch(/^(live|idle)$/);
      await waitForStatus(page, 1, 'COMPLETE', 30_000);
      expect(await expectAnswerMatchesStore(page, id, 1)).toBe(expectedText('A story across a network failure [rate=40] [tokens=200]'));
      await page.close();
    } finally {
      await proxy.close();
    }
  }, 60_000);
});

/** A GET with the path sent exactly as given (no URL normalisation) and optional headers. */
function rawGet(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, method: 'GET', headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}
