/**
 * The chat page served by the gateway at `/`: send a prompt, watch the answer stream, stop it,
 * reload or open a second tab and pick the answer up where it is.
 *
 * It talks to the gateway only through the project's SDK (`src/client`), over the AppSync
 * protocols: GraphQL over HTTP and the AppSync real-time WebSocket protocol. What it shows of a
 * conversation comes from two places: the `conversation` query (prompts, and the answers of turns
 * that had ended) and the conversation's numbered events, replayed from the start and then live
 * (`client.resume(id, { afterSeq: 0 })`). The SDK hands over each `seq` exactly once and in order,
 * so an answer followed across a reload or a dropped connection has nothing missing or doubled.
 *
 * State kept in the browser (localStorage): the API key, and the list of conversations (id, first
 * prompt). The open conversation's id is in the URL: `#/c/<id>`.
 */
import {
  ClientErrorCode,
  createClient,
  LongrunClientError,
  type ConnectionChange,
  type ConversationEvent,
  type ConversationStream,
  type LongrunClient,
  type TurnStatus,
  type Usage,
} from '../src/client/index.js';
import { renderMarkdown } from './markdown.js';

/** localStorage keys. */
const STORAGE_API_KEY = 'longrun.apiKey';
const STORAGE_CONVERSATIONS = 'longrun.conversations';
/** Conversations kept in the list; the oldest fall off. */
const MAX_LISTED = 200;

/** What `GET /app-config.json` answers (see `src/gateway/static.ts`). */
interface AppConfig {
  graphqlPath: string;
  devApiKey?: string;
}

/** One entry of the conversation list. */
interface ListedConversation {
  id: string;
  title: string;
  updatedAt: number;
}

/** A turn as the page shows it. SENDING: the prompt is on its way, nothing has come back yet. */
type TurnState = 'SENDING' | TurnStatus;

interface TurnView {
  turn: number;
  prompt: string;
  /** The answer so far. */
  text: string;
  status: TurnState;
  /** The answer came from the conversation's messages: the turn's CHUNK events are not applied again. */
  fromHistory: boolean;
  error: { code: string; message: string } | null;
  usage: Usage | null;
  stopReason: string | null;
  /** Server clock: when the turn started (from the `conversation` query). */
  startedAt: number | undefined;
  /** Browser clock: when this page sent the prompt; the time to first token is measured from it. */
  sentAt: number | undefined;
  ttftMs: number | undefined;
  /** Server clock (`createdAt`) of the first and the last CHUNK, for tokens per second. */
  firstChunkAt: number | undefined;
  lastChunkAt: number | undefined;
  element: HTMLLIElement;
  promptElement: HTMLParagraphElement;
  answer: HTMLDivElement;
  errorElement: HTMLParagraphElement;
  meta: HTMLParagraphElement;
  renderedText: string | undefined;
  /** Re-rendering a long answer costs time: not again before this (performance.now()). */
  renderNotBefore: number;
}

interface View {
  conversationId: string | undefined;
  turns: Map<number, TurnView>;
  /** The prompt sent from this page whose turn number the server has not confirmed yet. */
  pendingTurn: TurnView | undefined;
  /** The highest `seq` applied. */
  lastSeq: number;
  stream: ConversationStream | undefined;
  loading: boolean;
  /** The conversation has a running turn that this page follows: Stop applies to it. */
  running: boolean;
  stopping: boolean;
}

type ConnectionState = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'offline';

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  idle: '',
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Disconnected',
};

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`The page has no #${id}.`);
  return found as T;
}

const ui = {
  app: element<HTMLDivElement>('app'),
  toggleSidebar: element<HTMLButtonElement>('toggle-sidebar'),
  connection: element<HTMLParagraphElement>('connection'),
  openSettings: element<HTMLButtonElement>('open-settings'),
  list: element<HTMLUListElement>('conversation-list'),
  listEmpty: element<HTMLParagraphElement>('conversation-list-empty'),
  conversation: element<HTMLElement>('conversation'),
  conversationTitle: element<HTMLHeadingElement>('conversation-title'),
  emptyState: element<HTMLDivElement>('empty-state'),
  turns: element<HTMLOListElement>('turns'),
  notice: element<HTMLDivElement>('notice'),
  noticeText: element<HTMLParagraphElement>('notice-text'),
  noticeAction: element<HTMLButtonElement>('notice-action'),
  composer: element<HTMLFormElement>('composer'),
  prompt: element<HTMLTextAreaElement>('prompt'),
  send: element<HTMLButtonElement>('send'),
  stop: element<HTMLButtonElement>('stop'),
  announcer: element<HTMLParagraphElement>('announcer'),
  settings: element<HTMLDialogElement>('settings'),
  settingsForm: element<HTMLFormElement>('settings-form'),
  settingsReason: element<HTMLParagraphElement>('settings-reason'),
  apiKey: element<HTMLInputElement>('api-key'),
  showKey: element<HTMLInputElement>('show-key'),
  devKeyNote: element<HTMLParagraphElement>('dev-key-note'),
  useDevKey: element<HTMLButtonElement>('use-dev-key'),
  cancelSettings: element<HTMLButtonElement>('cancel-settings'),
};

let appConfig: AppConfig = { graphqlPath: '/graphql' };
let client: LongrunClient | undefined;
let current: View = newView(undefined);
let connection: ConnectionState = 'idle';
let noticeAction: (() => void) | undefined;
/** The reader is at the end of the conversation: keep them there as the answer grows. */
let stickToEnd = true;

// ---------------------------------------------------------------------------------------------
// Storage

function readStorage(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled: the page still works, it just forgets
  }
}

function writeStorage(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage full or disabled: nothing to do
  }
}

function storedApiKey(): string | undefined {
  const key = readStorage(STORAGE_API_KEY)?.trim();
  return key ? key : undefined;
}

/** The key in use: the one saved in settings, else the gateway's dev key when it offers one. */
function activeApiKey(): string | undefined {
  return storedApiKey() ?? appConfig.devApiKey;
}

function listedConversations(): ListedConversation[] {
  try {
    const parsed: unknown = JSON.parse(readStorage(STORAGE_CONVERSATIONS) ?? '[]');
    if (!Array.isArray(parsed)) return [];
    return parsed
      .filter(
        (item): item is ListedConversation =>
          typeof item === 'object' && item !== null && typeof item.id === 'string' && typeof item.title === 'string',
      )
      .map((item) => ({ id: item.id, title: item.title, updatedAt: Number(item.updatedAt) || 0 }));
  } catch {
    return [];
  }
}

function saveList(list: ListedConversation[]): void {
  list.sort((a, b) => b.updatedAt - a.updatedAt);
  writeStorage(STORAGE_CONVERSATIONS, JSON.stringify(list.slice(0, MAX_LISTED)));
  renderList();
}

/** Adds the conversation to the list, or moves it to the top; keeps its first title. */
function remember(id: string, firstPrompt: string, touch: boolean): void {
  const list = listedConversations();
  const existing = list.find((item) => item.id === id);
  if (existing) {
    if (!touch) return;
    existing.updatedAt = Date.now();
  } else {
    list.push({ id, title: titleOf(firstPrompt), updatedAt: Date.now() });
  }
  saveList(list);
}

function forget(id: string): void {
  saveList(listedConversations().filter((item) => item.id !== id));
}

function titleOf(prompt: string): string {
  const title = prompt.replace(/\s+/g, ' ').trim();
  return title === '' ? 'Untitled' : title.length > 120 ? `${title.slice(0, 119)}…` : title;
}

// ---------------------------------------------------------------------------------------------
// Client and connection state

/** Shows what the SDK says of its connection; it reconnects by itself. */
function connectionChanged(change: ConnectionChange): void {
  switch (change.status) {
    case 'connected':
      return setConnection('live');
    case 'reconnecting':
      return setConnection('reconnecting');
    case 'connecting':
      return setConnection('connecting');
    // A stream that failed for good says so itself, and shows "Disconnected".
    case 'idle':
    case 'closed':
      return setConnection('idle');
  }
}

function setConnection(state: ConnectionState): void {
  if (state === connection) return;
  connection = state;
  ui.connection.dataset.state = state;
  ui.connection.textContent = CONNECTION_LABELS[state];
}

function replaceClient(): void {
  client?.close();
  client = undefined;
  const apiKey = activeApiKey();
  if (apiKey === undefined) return;
  try {
    const created = createClient({ url: new URL(appConfig.graphqlPath, location.href).href, apiKey });
    created.onConnectionChange((change) => {
      if (created === client) connectionChanged(change);
    });
    client = created;
  } catch (error) {
    showNotice(`The page could not set up its client: ${messageOf(error)}`);
  }
}

async function loadAppConfig(): Promise<AppConfig> {
  try {
    const response = await fetch('/app-config.json', { headers: { accept: 'application/json' } });
    if (!response.ok) return appConfig;
    const body = (await response.json()) as Partial<AppConfig>;
    return {
      graphqlPath: typeof body.graphqlPath === 'string' ? body.graphqlPath : '/graphql',
      ...(typeof body.devApiKey === 'string' && body.devApiKey !== '' ? { devApiKey: body.devApiKey } : {}),
    };
  } catch {
    return appConfig;
  }
}

// ---------------------------------------------------------------------------------------------
// Conversation view

function newView(conversationId: string | undefined): View {
  return {
    conversationId,
    turns: new Map(),
    pendingTurn: undefined,
    lastSeq: 0,
    stream: undefined,
    loading: false,
    running: false,
    stopping: false,
  };
}

function conversationIdFromUrl(): string | undefined {
  const match = /^#\/c\/([^/?#]+)$/.exec(location.hash);
  if (!match) return undefined;
  try {
    return decodeURIComponent(match[1]!);
  } catch {
    return undefined;
  }
}

function hrefFor(id: string): string {
  return `#/c/${encodeURIComponent(id)}`;
}

/** Opens the conversation the URL names (or a new one); nothing happens when it is already open. */
function route(): void {
  const id = conversationIdFromUrl();
  if (id === current.conversationId && (id === undefined || current.turns.size > 0 || current.loading || current.stream)) return;
  void openConversation(id);
}

async function openConversation(id: string | undefined): Promise<void> {
  // The turn goes on on the server; coming back resumes it.
  current.stream?.close();
  const view = newView(id);
  current = view;
  clearNotice();
  ui.turns.replaceChildren();
  stickToEnd = true;
  ui.app.classList.remove('sidebar-open');
  ui.toggleSidebar.setAttribute('aria-expanded', 'false');
  renderList();
  refreshChrome();
  setConnection('idle');
  if (id === undefined) return;
  if (!client) {
    askForKey();
    return;
  }

  view.loading = true;
  refreshChrome();
  let conversation: Awaited<ReturnType<LongrunClient['conversation']>>;
  try {
    conversation = await client.conversation(id);
  } catch (error) {
    if (view !== current) return;
    view.loading = false;
    refreshChrome();
    showFailure(error, { retry: () => void openConversation(id) });
    return;
  }
  if (view !== current) return;
  view.loading = false;
  if (conversation === null) {
    refreshChrome();
    showNotice('This conversation does not exist on this gateway: it was deleted, or the gateway’s database was reset.', {
      label: 'Remove it from the list',
      run: () => {
        forget(id);
        navigate(undefined);
      },
    });
    return;
  }

  const prompts = new Map<number, string>();
  const answers = new Map<number, string>();
  for (const message of conversation.messages) (message.role === 'user' ? prompts : answers).set(message.turn, message.content);
  for (const turn of conversation.turns) {
    const turnView = addTurn(view, turn.turn, prompts.get(turn.turn) ?? '', turn.status);
    turnView.startedAt = turn.startedAt;
    if (turn.status !== 'RUNNING') {
      turnView.text = answers.get(turn.turn) ?? '';
      turnView.fromHistory = true;
    }
    scheduleRender(turnView, true);
  }
  remember(id, prompts.get(1) ?? '', false);
  view.running = conversation.status === 'RUNNING';
  refreshChrome();
  scrollToEnd();
  // Replaying from the first event brings the running turn's text so far, then the rest live, and
  // the ERROR messages and timings of the turns that ended (the messages do not carry them).
  void follow(view, client.resume(id, { afterSeq: 0 }));
}

function navigate(id: string | undefined): void {
  const target = id === undefined ? '#/' : hrefFor(id);
  if (location.hash !== target) history.pushState(null, '', target);
  void openConversation(id);
}

function addTurn(view: View, turn: number, prompt: string, status: TurnState): TurnView {
  const item = document.createElement('li');
  item.className = 'turn';
  item.dataset.turn = String(turn);
  item.dataset.status = status;

  const user = document.createElement('div');
  user.className = 'message user';
  const userLabel = document.createElement('h3');
  userLabel.className = 'visually-hidden';
  userLabel.textContent = 'You';
  const promptElement = document.createElement('p');
  promptElement.className = 'prompt-text';
  promptElement.textContent = prompt;
  user.append(userLabel, promptElement);

  const assistant = document.createElement('div');
  assistant.className = 'message assistant';
  const assistantLabel = document.createElement('h3');
  assistantLabel.className = 'visually-hidden';
  assistantLabel.textContent = 'Answer';
  const answer = document.createElement('div');
  answer.className = 'answer markdown';
  const errorElement = document.createElement('p');
  errorElement.className = 'turn-error';
  errorElement.hidden = true;
  const meta = document.createElement('p');
  meta.className = 'turn-meta';
  assistant.append(assistantLabel, answer, errorElement, meta);

  item.append(user, assistant);
  ui.turns.append(item);

  const turnView: TurnView = {
    turn,
    prompt,
    text: '',
    status,
    fromHistory: false,
    error: null,
    usage: null,
    stopReason: null,
    startedAt: undefined,
    sentAt: undefined,
    ttftMs: undefined,
    firstChunkAt: undefined,
    lastChunkAt: undefined,
    element: item,
    promptElement,
    answer,
    errorElement,
    meta,
    renderedText: undefined,
    renderNotBefore: 0,
  };
  view.turns.set(turn, turnView);
  return turnView;
}

/** Follows a stream until it ends; its events go to `view` while `view` is on screen. */
async function follow(view: View, stream: ConversationStream): Promise<void> {
  view.stream = stream;
  refreshChrome();
  try {
    for await (const event of stream) {
      if (view !== current) return;
      applyEvent(view, event);
    }
  } catch (error) {
    if (view !== current) return;
    const pending = view.pendingTurn;
    if (pending && pending.status === 'SENDING' && !(await startedOf(stream))) {
      // Nothing reached the server: take the turn back and give the prompt back to edit or resend.
      pending.element.remove();
      view.turns.delete(pending.turn);
      view.pendingTurn = undefined;
      if (ui.prompt.value.trim() === '') ui.prompt.value = pending.prompt;
      if (view.turns.size === 0 && view.conversationId !== undefined && !listedConversations().some((item) => item.id === view.conversationId)) {
        view.conversationId = undefined;
        if (location.hash !== '#/' && location.hash !== '') history.replaceState(null, '', '#/');
      }
    }
    showFailure(error, {
      reconnect: () => {
        if (view === current && view.conversationId !== undefined && client && !view.stream) {
          clearNotice();
          void follow(view, client.resume(view.conversationId, { afterSeq: view.lastSeq }));
        }
      },
      retry: () => void openConversation(view.conversationId),
    });
  } finally {
    if (view.stream === stream) {
      view.stream = undefined;
      view.running = false;
      view.stopping = false;
      for (const turnView of view.turns.values()) {
        // The stream ended without this turn's terminal event (the connection was lost): it is
        // not known to be running any more from here.
        if (turnView.status === 'SENDING' || turnView.status === 'RUNNING') scheduleRender(turnView, true);
      }
    }
    if (view === current) {
      if (connection !== 'offline') setConnection('idle');
      const stopHadFocus = document.activeElement === ui.stop;
      refreshChrome();
      if (stopHadFocus) ui.prompt.focus();
    }
  }
}

async function startedOf(stream: ConversationStream): Promise<boolean> {
  try {
    await stream.started;
    return true;
  } catch {
    return false;
  }
}

function applyEvent(view: View, event: ConversationEvent): void {
  if (event.seq <= view.lastSeq) return;
  view.lastSeq = event.seq;
  let turnView = view.turns.get(event.turn);
  if (!turnView && view.pendingTurn) {
    // The server numbered the turn otherwise than this page guessed (another tab started one).
    turnView = view.pendingTurn;
    view.turns.delete(turnView.turn);
    turnView.turn = event.turn;
    turnView.element.dataset.turn = String(event.turn);
    view.turns.set(event.turn, turnView);
  }
  if (turnView === view.pendingTurn) view.pendingTurn = undefined;
  if (!turnView) {
    // A turn started after this page read the conversation (from another tab): its prompt is
    // in the conversation's messages.
    turnView = addTurn(view, event.turn, '', 'RUNNING');
    void fillPrompt(view, turnView);
  }

  if (event.type === 'CHUNK') {
    if (turnView.firstChunkAt === undefined) {
      turnView.firstChunkAt = event.createdAt;
      if (turnView.sentAt !== undefined) turnView.ttftMs = Date.now() - turnView.sentAt;
      else if (turnView.startedAt !== undefined) turnView.ttftMs = Math.max(0, event.createdAt - turnView.startedAt);
    }
    turnView.lastChunkAt = event.createdAt;
    if (!turnView.fromHistory) {
      turnView.text += event.chunk ?? '';
      if (turnView.status === 'SENDING') turnView.status = 'RUNNING';
    }
    scheduleRender(turnView, false);
    return;
  }

  const wasOpen = turnView.status === 'SENDING' || turnView.status === 'RUNNING';
  turnView.status = event.type;
  if (event.type === 'COMPLETE') {
    turnView.usage = event.usage;
    turnView.stopReason = event.stopReason;
  } else if (event.type === 'ERROR') {
    turnView.error = { code: event.errorCode ?? 'UnknownError', message: event.error ?? 'The model failed without saying why.' };
  }
  scheduleRender(turnView, true);
  if (wasOpen) {
    view.running = false;
    view.stopping = false;
    refreshChrome();
    announce(
      event.type === 'COMPLETE'
        ? 'The answer is complete.'
        : event.type === 'CANCELLED'
          ? 'The answer was stopped.'
          : `The answer failed: ${turnView.error?.message ?? ''}`,
    );
  }
}

async function fillPrompt(view: View, turnView: TurnView): Promise<void> {
  if (!client || view.conversationId === undefined) return;
  try {
    const conversation = await client.conversation(view.conversationId);
    const prompt = conversation?.messages.find((message) => message.role === 'user' && message.turn === turnView.turn)?.content;
    if (prompt !== undefined && view === current) {
      turnView.prompt = prompt;
      turnView.promptElement.textContent = prompt;
    }
  } catch {
    // the prompt stays blank; the answer is what matters
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

const dirty = new Set<TurnView>();
let frame: number | undefined;

/** Renders the turn on the next frame; `now` skips the throttle (a turn that just ended). */
function scheduleRender(turnView: TurnView, now: boolean): void {
  if (now) turnView.renderNotBefore = 0;
  dirty.add(turnView);
  frame ??= requestAnimationFrame(flushRenders);
}

function flushRenders(): void {
  frame = undefined;
  const now = performance.now();
  for (const turnView of dirty) {
    if (now < turnView.renderNotBefore) continue;
    dirty.delete(turnView);
    const began = performance.now();
    renderTurn(turnView);
    // Markdown is rendered whole each time; a long answer is re-rendered less often, so the page
    // stays responsive however long the answer grows.
    const cost = performance.now() - began;
    turnView.renderNotBefore = performance.now() + Math.min(cost * 4, 500);
  }
  if (stickToEnd) scrollToEnd();
  if (dirty.size > 0) frame = requestAnimationFrame(flushRenders);
}

function renderTurn(turnView: TurnView): void {
  const open = turnView.status === 'SENDING' || turnView.status === 'RUNNING';
  const following = open && current.turns.get(turnView.turn) === turnView && current.stream !== undefined;
  turnView.element.dataset.status = turnView.status;
  // Only an answer written while the page watches is a live region (answers from history would be
  // read out on every load). It is busy while it streams: screen readers read it once it is whole.
  if (following) turnView.answer.setAttribute('aria-live', 'polite');
  if (turnView.answer.hasAttribute('aria-live')) turnView.answer.setAttribute('aria-busy', String(following));
  if (turnView.renderedText !== turnView.text) {
    // markdown-it runs with `html: false`: model text is escaped, never parsed as markup.
    turnView.answer.innerHTML = renderMarkdown(turnView.text);
    turnView.renderedText = turnView.text;
  }
  turnView.answer.classList.toggle('waiting', following && turnView.text === '');

  if (turnView.error) {
    turnView.errorElement.hidden = false;
    turnView.errorElement.replaceChildren(
      'The model failed: ',
      textSpan('turn-error-message', turnView.error.message),
      ' ',
      textSpan('turn-error-code', `(${turnView.error.code})`),
    );
  } else {
    turnView.errorElement.hidden = true;
  }

  const parts: HTMLElement[] = [];
  const statusText = {
    SENDING: following ? 'Waiting for the first token…' : 'Not started',
    RUNNING: following ? 'Streaming…' : 'Running (not followed)',
    COMPLETE: turnView.stopReason && turnView.stopReason !== 'end_turn' ? `Complete (${turnView.stopReason})` : 'Complete',
    ERROR: 'Failed',
    CANCELLED: 'Stopped',
  }[turnView.status];
  parts.push(textSpan(`badge badge-${turnView.status.toLowerCase()}`, statusText));
  if (turnView.ttftMs !== undefined) parts.push(metric('ttft', `first token ${formatDuration(turnView.ttftMs)}`));
  const rate = tokensPerSecond(turnView);
  if (rate !== undefined) parts.push(metric('rate', `${rate.exact ? '' : '≈ '}${formatNumber(rate.value)} tokens/s`));
  if (turnView.usage) parts.push(metric('tokens', `${turnView.usage.outputTokens} tokens`));
  turnView.meta.replaceChildren(...parts);
}

function tokensPerSecond(turnView: TurnView): { value: number; exact: boolean } | undefined {
  if (turnView.firstChunkAt === undefined || turnView.lastChunkAt === undefined) return undefined;
  const seconds = (turnView.lastChunkAt - turnView.firstChunkAt) / 1000;
  // Over a few milliseconds the rate says nothing (an answer sent in one or two chunks).
  if (seconds < 0.05) return undefined;
  // Chunks are coalesced deltas, not tokens: until COMPLETE reports the count, estimate ~4 characters a token.
  const exact = turnView.usage !== null;
  const tokens = turnView.usage?.outputTokens ?? Math.max(1, Math.round(turnView.text.length / 4));
  return { value: tokens / seconds, exact };
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function formatNumber(value: number): string {
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
}

function textSpan(className: string, text: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}

function metric(name: string, text: string): HTMLSpanElement {
  const span = textSpan('metric', text);
  span.dataset.metric = name;
  return span;
}

function isNearEnd(): boolean {
  const scroller = ui.conversation;
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
}

function scrollToEnd(): void {
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

/** Everything around the turns: buttons, empty state, title, list highlight. */
function refreshChrome(): void {
  const view = current;
  ui.emptyState.hidden = view.conversationId !== undefined;
  ui.send.disabled = view.loading || view.stream !== undefined;
  ui.stop.hidden = !view.running;
  ui.stop.disabled = view.stopping;
  ui.stop.textContent = view.stopping ? 'Stopping…' : 'Stop';
  ui.composer.dataset.busy = String(view.stream !== undefined);
  const listed = listedConversations().find((item) => item.id === view.conversationId);
  const title = view.conversationId === undefined ? 'New conversation' : (listed?.title ?? 'Conversation');
  ui.conversationTitle.textContent = title;
  document.title = view.conversationId === undefined ? 'longrun' : `${title} · longrun`;
  ui.list.querySelectorAll<HTMLAnchorElement>('a[data-id]').forEach((link) => {
    if (link.dataset.id === view.conversationId) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  });
}

function renderList(): void {
  const list = listedConversations();
  ui.list.replaceChildren(
    ...list.map((item) => {
      const entry = document.createElement('li');
      const link = document.createElement('a');
      link.href = hrefFor(item.id);
      link.dataset.id = item.id;
      link.textContent = item.title;
      link.title = item.title;
      if (item.id === current.conversationId) link.setAttribute('aria-current', 'page');
      entry.append(link);
      return entry;
    }),
  );
  ui.listEmpty.hidden = list.length > 0;
}

function announce(text: string): void {
  ui.announcer.textContent = '';
  // A change of text is what screen readers announce; the same text twice needs the blank first.
  setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

// ---------------------------------------------------------------------------------------------
// Notices and errors

function showNotice(text: string, action?: { label: string; run: () => void }): void {
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
  noticeAction = action?.run;
  ui.noticeAction.hidden = action === undefined;
  ui.noticeAction.textContent = action?.label ?? '';
}

function clearNotice(): void {
  ui.notice.hidden = true;
  ui.noticeText.textContent = '';
  noticeAction = undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Tells the user what went wrong and what to do about it. */
function showFailure(error: unknown, actions: { retry?: () => void; reconnect?: () => void } = {}): void {
  const code = error instanceof LongrunClientError ? error.code : undefined;
  switch (code) {
    case ClientErrorCode.Aborted:
    case ClientErrorCode.ClientClosed:
      return; // the page stopped it (navigation, a new key)
    case ClientErrorCode.Unauthorized:
      setConnection('offline');
      showNotice('The gateway refused the API key. Check the key in Settings.', { label: 'Open settings', run: () => openSettings() });
      return;
    case ClientErrorCode.ConnectionLost:
      setConnection('offline');
      showNotice('Lost the connection to the gateway and could not reconnect. The answer goes on on the server.', {
        label: 'Reconnect',
        run: actions.reconnect ?? actions.retry ?? (() => route()),
      });
      return;
    case ClientErrorCode.ConnectionFailed:
    case ClientErrorCode.Timeout:
      setConnection('offline');
      showNotice(`Cannot reach the gateway: ${messageOf(error)}`, actions.retry ? { label: 'Try again', run: actions.retry } : undefined);
      return;
    case 'ConflictException':
      showNotice('A turn is already running in this conversation (perhaps in another tab). Wait for it to end, or stop it.', {
        label: 'Follow it',
        run: actions.retry ?? (() => route()),
      });
      return;
    default:
      showNotice(messageOf(error));
  }
}

function askForKey(): void {
  showNotice('This page needs the gateway’s API key.', { label: 'Open settings', run: () => openSettings() });
  openSettings('Enter the API key of this gateway to start.');
}

// ---------------------------------------------------------------------------------------------
// Actions

function send(): void {
  const prompt = ui.prompt.value;
  if (prompt.trim() === '') return;
  const view = current;
  if (view.loading || view.stream) return;
  if (!client) {
    askForKey();
    return;
  }
  clearNotice();
  const conversationId = view.conversationId;
  let stream: ConversationStream;
  try {
    stream = client.chat(prompt, conversationId === undefined ? {} : { conversationId });
  } catch (error) {
    showFailure(error);
    return;
  }
  ui.prompt.value = '';
  const isNew = conversationId === undefined;
  view.conversationId = stream.conversationId;
  const guess = Math.max(0, ...view.turns.keys()) + 1;
  const turnView = addTurn(view, guess, prompt, 'SENDING');
  turnView.sentAt = Date.now();
  view.pendingTurn = turnView;
  view.running = true;
  scheduleRender(turnView, true);
  scrollToEnd();
  void stream.started.then(
    () => {
      if (isNew && view === current) {
        // The id goes in the URL once the server has the conversation: a reload resumes it.
        history.pushState(null, '', hrefFor(stream.conversationId));
      }
      remember(stream.conversationId, prompt, true);
      if (view === current) refreshChrome();
    },
    () => undefined,
  );
  void follow(view, stream);
}

async function stop(): Promise<void> {
  const view = current;
  const stream = view.stream;
  if (!view.running || view.stopping || !stream) return;
  view.stopping = true;
  refreshChrome();
  try {
    // The stream ends with the CANCELLED event, which renders the turn as stopped.
    await stream.cancel();
  } catch (error) {
    if (view !== current) return;
    view.stopping = false;
    refreshChrome();
    showFailure(error);
  }
}

function openSettings(reason?: string): void {
  ui.apiKey.value = activeApiKey() ?? '';
  ui.showKey.checked = false;
  ui.apiKey.type = 'password';
  ui.devKeyNote.hidden = appConfig.devApiKey === undefined;
  ui.settingsReason.hidden = reason === undefined;
  ui.settingsReason.textContent = reason ?? '';
  if (!ui.settings.open) ui.settings.showModal();
  ui.apiKey.focus();
  ui.apiKey.select();
}

function saveSettings(): void {
  const key = ui.apiKey.value.trim();
  // The dev key is not saved: the gateway offers it each time, and a new one after a reset.
  writeStorage(STORAGE_API_KEY, key === '' || key === appConfig.devApiKey ? null : key);
  ui.settings.close();
  replaceClient();
  clearNotice();
  if (!client) {
    askForKey();
    return;
  }
  void openConversation(current.conversationId);
  ui.prompt.focus();
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire(): void {
  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  ui.prompt.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.stop.addEventListener('click', () => void stop());
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || ui.settings.open) return;
    if (current.running) {
      event.preventDefault();
      void stop();
    } else if (ui.app.classList.contains('sidebar-open')) {
      toggleSidebar(false);
    }
  });
  ui.noticeAction.addEventListener('click', () => noticeAction?.());
  ui.openSettings.addEventListener('click', () => openSettings());
  ui.settingsForm.addEventListener('submit', (event) => {
    event.preventDefault();
    saveSettings();
  });
  ui.cancelSettings.addEventListener('click', () => ui.settings.close());
  ui.showKey.addEventListener('change', () => {
    ui.apiKey.type = ui.showKey.checked ? 'text' : 'password';
  });
  ui.useDevKey.addEventListener('click', () => {
    ui.apiKey.value = appConfig.devApiKey ?? '';
    ui.apiKey.focus();
  });
  ui.toggleSidebar.addEventListener('click', () => toggleSidebar(!ui.app.classList.contains('sidebar-open')));
  ui.list.addEventListener('click', (event) => {
    if ((event.target as HTMLElement).closest('a')) toggleSidebar(false);
  });
  ui.conversation.addEventListener('scroll', () => {
    stickToEnd = isNearEnd();
  }, { passive: true });
  new ResizeObserver(() => {
    if (stickToEnd) scrollToEnd();
  }).observe(ui.conversation);
  window.addEventListener('hashchange', route);
  window.addEventListener('popstate', route);
  window.addEventListener('storage', (event) => {
    if (event.key === STORAGE_CONVERSATIONS) renderList();
    if (event.key === STORAGE_API_KEY) {
      replaceClient();
      void openConversation(current.conversationId);
    }
  });
}

function toggleSidebar(open: boolean): void {
  ui.app.classList.toggle('sidebar-open', open);
  ui.toggleSidebar.setAttribute('aria-expanded', String(open));
  if (open) ui.list.querySelector<HTMLAnchorElement>('a')?.focus();
}

async function boot(): Promise<void> {
  wire();
  // `?c=<id>` is accepted too; the page's own form is `#/c/<id>`.
  const fromQuery = new URLSearchParams(location.search).get('c');
  if (fromQuery) history.replaceState(null, '', `${location.pathname}${hrefFor(fromQuery)}`);
  renderList();
  refreshChrome();
  appConfig = await loadAppConfig();
  replaceClient();
  if (!client) askForKey();
  route();
  if (!client) return;
  if (matchMedia('(pointer: fine)').matches) ui.prompt.focus();
}

void boot();
