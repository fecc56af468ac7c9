#!/usr/bin/env node
// AG-UI conformance check of Citadel's agent endpoint (POST /api/v1/agui), driven by the official
// TypeScript client: @ag-ui/client 1.0.0 (`--client 1`) or 0.0.59, the version every CopilotKit
// package pins (`--client 0`, installed under the alias `ag-ui-client-0`).
//
//   node tests/js/agui.mjs --client 1|0 --url http://127.0.0.1:PORT [--token TOKEN] [--only NAME[,NAME]]
//                          [--timeout SECONDS] [--verbose]
//
// Every scenario builds a fresh HttpAgent (fresh threadId) and runs it. Each run records every event
// the client hands its subscribers (`onEvent`) and, through a fetch wrapper, every event as it came
// over the wire, and checks the stream: RUN_STARTED first, RUN_FINISHED or RUN_ERROR last (a stream
// that just ends is a failure even though runAgent resolves), integer timestamps, no `null` anywhere,
// text/tool-call open/close discipline, JSON tool-call arguments, string TOOL_CALL_RESULT content,
// and no client warnings (dropped events, stripped fields, failed state patches). One JSON line per
// scenario goes to stdout; failures are also explained on stderr. Exit 0 only if all pass.
// See /work/shared/AGUI.md for the protocol facts these checks come from.

import { parseArgs, isDeepStrictEqual } from 'node:util';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

const SCENARIO_NAMES = ['text', 'server_action', 'frontend_tool', 'workflow_state', 'upstream_error', 'state_roundtrip'];
const CLIENT_PACKAGES = { 1: '@ag-ui/client', 0: 'ag-ui-client-0' };

const KNOWN_TYPES = new Set([
  'RUN_STARTED', 'RUN_FINISHED', 'RUN_ERROR', 'STEP_STARTED', 'STEP_FINISHED',
  'TEXT_MESSAGE_START', 'TEXT_MESSAGE_CONTENT', 'TEXT_MESSAGE_END', 'TEXT_MESSAGE_CHUNK',
  'TOOL_CALL_START', 'TOOL_CALL_ARGS', 'TOOL_CALL_END', 'TOOL_CALL_CHUNK', 'TOOL_CALL_RESULT',
  'STATE_SNAPSHOT', 'STATE_DELTA', 'MESSAGES_SNAPSHOT', 'ACTIVITY_SNAPSHOT', 'ACTIVITY_DELTA',
  'RAW', 'CUSTOM', 'REASONING_START', 'REASONING_END', 'REASONING_MESSAGE_START',
  'REASONING_MESSAGE_CONTENT', 'REASONING_MESSAGE_END', 'REASONING_MESSAGE_CHUNK',
  'REASONING_ENCRYPTED_VALUE', 'SUBAGENT_STARTED', 'SUBAGENT_FINISHED', 'SUBAGENT_ERROR',
]);
const TERMINAL = new Set(['RUN_FINISHED', 'RUN_ERROR']);

// Typed subscriber callbacks whose call counts must match the events of that type seen by onEvent.
const TYPED_CALLBACKS = {
  onRunStartedEvent: 'RUN_STARTED',
  onRunFinishedEvent: 'RUN_FINISHED',
  onRunErrorEvent: 'RUN_ERROR',
  onTextMessageStartEvent: 'TEXT_MESSAGE_START',
  onTextMessageContentEvent: 'TEXT_MESSAGE_CONTENT',
  onTextMessageEndEvent: 'TEXT_MESSAGE_END',
  onToolCallStartEvent: 'TOOL_CALL_START',
  onToolCallArgsEvent: 'TOOL_CALL_ARGS',
  onToolCallEndEvent: 'TOOL_CALL_END',
  onToolCallResultEvent: 'TOOL_CALL_RESULT',
  onStateSnapshotEvent: 'STATE_SNAPSHOT',
  onStateDeltaEvent: 'STATE_DELTA',
};

// ---------------------------------------------------------------------------------------------
// command line

function usage(msg) {
  if (msg) process.stderr.write(`agui.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node tests/js/agui.mjs --client 1|0 --url http://HOST:PORT [--token TOKEN] ' +
      `[--only ${SCENARIO_NAMES.join('|')}[,...]] [--timeout SECONDS] [--verbose]\n`,
  );
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      client: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
      only: { type: 'string' },
      timeout: { type: 'string', default: '20' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (e) {
  usage(e.message);
}
if (args.help) usage();
if (!(args.client in CLIENT_PACKAGES)) usage('--client must be 1 (@ag-ui/client 1.0.0) or 0 (0.0.59)');
if (!args.url) usage('--url is required');
const BASE_URL = args.url.replace(/\/+$/, '');
const ENDPOINT = `${BASE_URL}/api/v1/agui`;
const HEADERS = args.token ? { Authorization: `Bearer ${args.token}` } : {};
const TIMEOUT_MS = Math.round(Number(args.timeout) * 1000);
if (!Number.isFinite(TIMEOUT_MS) || TIMEOUT_MS <= 0) usage('--timeout must be a positive number of seconds');
const VERBOSE = args.verbose;
let selected = SCENARIO_NAMES;
if (args.only) {
  selected = args.only.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of selected) if (!SCENARIO_NAMES.includes(s)) usage(`unknown scenario '${s}'`);
}

const PKG = CLIENT_PACKAGES[args.client];
let clientVersion = `?`;
try {
  clientVersion = JSON.parse(readFileSync(new URL(`./node_modules/${PKG}/package.json`, import.meta.url), 'utf8')).version;
} catch {
  /* version is only informational */
}
const client = await import(PKG);
const { HttpAgent } = client;
if (typeof HttpAgent !== 'function') {
  process.stderr.write(`agui.mjs: ${PKG} exports no HttpAgent\n`);
  process.exit(2);
}
const CLIENT_LABEL = `${args.client}:${clientVersion}`;

// ---------------------------------------------------------------------------------------------
// small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const short = (v, n = 200) => {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > n ? `${s.slice(0, n)}…` : s;
};
const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const errText = (e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));
function tryJson(s) {
  try {
    return { ok: true, value: JSON.parse(s) };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

// Paths of every `null` inside v.
function findNulls(v, path, out) {
  if (v === null) out.push(path);
  else if (Array.isArray(v)) v.forEach((x, i) => findNulls(x, `${path}[${i}]`, out));
  else if (typeof v === 'object') for (const [k, x] of Object.entries(v)) findNulls(x, `${path}.${k}`, out);
  return out;
}

// Run-length encoding of a list of labels: A, B, B, B -> A, B*3.
function rle(list) {
  const out = [];
  for (const x of list) {
    const last = out.at(-1);
    if (last && last.x === x) last.n += 1;
    else out.push({ x, n: 1 });
  }
  return out.map(({ x, n }) => (n > 1 ? `${x}*${n}` : x));
}

// Compact description of an event for failure output.
function describe(e) {
  const id = e.messageId ?? e.toolCallId;
  const bits = [e.type];
  if (id !== undefined) bits.push(String(id).slice(0, 12));
  if (e.toolCallName) bits.push(e.toolCallName);
  if (e.type === 'RUN_ERROR') bits.push(short(e.message, 80));
  return bits.length > 1 ? `${bits[0]}(${bits.slice(1).join(' ')})` : bits[0];
}

// ---------------------------------------------------------------------------------------------
// wire capture: the agent's fetch tees the response so the raw SSE frames can be checked too

function parseSseInto(text, rec, flush) {
  // Same framing as the clients: events are separated by a blank line ("\n\n").
  rec.wireBuf += text;
  const parts = rec.wireBuf.split('\n\n');
  rec.wireBuf = flush ? '' : parts.pop();
  for (const frame of parts) {
    if (!frame.trim()) continue;
    if (frame.includes('\r')) rec.wireProblems.push('SSE frame contains \\r (CRLF framing breaks both clients)');
    const data = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':') || line === '') continue; // comment / keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
    }
    if (data.length === 0) continue;
    const payload = data.join('\n');
    const parsed = tryJson(payload);
    if (!parsed.ok) rec.wireProblems.push(`SSE data is not JSON (${parsed.error}): ${short(payload, 120)}`);
    else rec.wire.push(parsed.value);
  }
}

async function readWire(stream, rec, isSse) {
  const reader = stream.getReader();
  rec.wireReader = reader;
  const dec = new TextDecoder();
  let body = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const text = dec.decode(value, { stream: true });
      if (isSse) parseSseInto(text, rec, false);
      else if (body.length < 4000) body += text;
    }
    if (isSse) parseSseInto(dec.decode(), rec, true);
  } catch (e) {
    if (!rec.settled && !rec.timedOut) rec.wireProblems.push(`reading the response failed: ${errText(e)}`);
  }
  if (!isSse && rec.http) rec.http.body = body.slice(0, 1000);
}

function makeFetch(getRec) {
  return async (url, init) => {
    const rec = getRec();
    if (rec) {
      rec.requests += 1;
      const body = tryJson(init?.body);
      rec.request = body.ok ? body.value : init?.body;
    }
    const res = await fetch(url, init);
    if (!rec || !res.body) return res;
    const contentType = res.headers.get('content-type') || '';
    rec.http = { status: res.status, contentType };
    const [forClient, forUs] = res.body.tee();
    rec.wireDone = readWire(forUs, rec, contentType.includes('text/event-stream'));
    return new Response(forClient, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

function newAgent({ messages = [], state } = {}) {
  let current = null;
  const agent = new HttpAgent({
    url: ENDPOINT,
    headers: HEADERS,
    threadId: `t-${randomUUID()}`,
    initialMessages: messages,
    ...(state !== undefined && { initialState: state }),
    fetch: makeFetch(() => current),
  });
  return { agent, setRec: (r) => (current = r) };
}

const userMsg = (content) => ({ id: `u-${randomUUID()}`, role: 'user', content });

// ---------------------------------------------------------------------------------------------
// one run: drive runAgent, record, then check the generic stream rules

async function runOnce(handle, params, deadline, label) {
  const { agent, setRec } = handle;
  const rec = {
    label,
    events: [],
    wire: [],
    wireBuf: '',
    wireProblems: [],
    wireDone: null,
    wireReader: null,
    http: null,
    request: null,
    requests: 0,
    typed: {},
    runErrorEvents: [],
    finished: null,
    failed: null,
    rejected: null,
    result: null,
    timedOut: false,
    settled: false,
    stateChanges: 0,
    warnings: [],
    ms: 0,
  };
  setRec(rec);
  const subscriber = {
    onEvent: ({ event }) => {
      rec.events.push(structuredClone(event));
    },
    onRunFailed: ({ error }) => {
      rec.failed = error;
    },
    onStateChanged: () => {
      rec.stateChanges += 1;
    },
  };
  for (const name of Object.keys(TYPED_CALLBACKS)) {
    subscriber[name] = (p) => {
      rec.typed[name] = (rec.typed[name] ?? 0) + 1;
      if (name === 'onRunErrorEvent') rec.runErrorEvents.push(p.event);
      if (name === 'onRunFinishedEvent') {
        rec.finished = { outcome: p.outcome, pendingToolCallIds: p.pendingToolCallIds, result: p.result };
      }
    };
  }

  // Client warnings (dropped events, stripped fields, failed patches, …) are failures; keep them.
  const origWarn = console.warn;
  const origError = console.error;
  console.warn = (...a) => {
    rec.warnings.push(a.map((x) => (typeof x === 'string' ? x : errText(x))).join(' '));
    if (VERBOSE) origWarn('[client warn]', ...a);
  };
  console.error = (...a) => {
    // "Agent execution failed:" accompanies a rejection, which is reported on its own.
    if (VERBOSE) origError('[client error]', ...a);
  };

  const t0 = Date.now();
  const run = agent.runAgent(params, subscriber).then(
    (r) => ({ ok: true, r }),
    (e) => ({ ok: false, e }),
  );
  let timer;
  const timeout = new Promise((r) => {
    timer = setTimeout(() => r({ timeout: true }), Math.max(1, deadline - Date.now()));
  });
  const out = await Promise.race([run, timeout]);
  clearTimeout(timer);
  if (out.timeout) {
    rec.timedOut = true;
    rec.eventsAtTimeout = rec.events.length;
    try {
      agent.abortRun();
    } catch {
      /* ignore */
    }
    await Promise.race([run, sleep(1000)]);
  } else if (!out.ok) rec.rejected = out.e;
  else rec.result = out.r;
  rec.ms = Date.now() - t0;
  // What the client makes up after the abort (1.0 synthesises a RUN_ERROR) is not the server's.
  if (rec.timedOut) rec.afterAbort = rec.events.splice(rec.eventsAtTimeout);
  if (rec.wireDone) await Promise.race([rec.wireDone, sleep(1500)]);
  rec.settled = true;
  rec.wireReader?.cancel().catch(() => {});
  console.warn = origWarn;
  console.error = origError;
  setRec(null);
  rec.analysis = analyse(rec);
  return rec;
}

// Generic checks; returns {problems, texts, toolCalls, results, ...} for the scenario to use.
function analyse(rec) {
  const problems = [];
  const p = (m) => problems.push(m);
  const ev = rec.events;
  const types = ev.map((e) => e.type);

  if (rec.requests === 0 && !rec.rejected) p('no HTTP request was made');
  if (rec.timedOut) p(`timed out after ${rec.ms} ms without the stream ending (last event: ${types.at(-1) ?? 'none'})`);
  if (rec.rejected) p(`runAgent rejected: ${short(errText(rec.rejected).replace(/\s+/g, ' '), 600)}`);
  if (rec.http) {
    if (rec.http.status < 200 || rec.http.status > 299) {
      p(`HTTP ${rec.http.status}${rec.http.body ? `: ${short(rec.http.body, 300)}` : ''}`);
    } else if (!rec.http.contentType.includes('text/event-stream')) {
      p(`content-type is '${rec.http.contentType}', expected text/event-stream`);
    }
  }
  for (const w of new Set(rec.wireProblems)) p(`wire: ${w}`);
  for (const w of rec.warnings) p(`client warning: ${short(w.replace(/\s+/g, ' '), 400)}`);

  if (ev.length === 0) p('the client saw no events');
  else {
    if (types[0] !== 'RUN_STARTED') p(`first event is ${types[0]}, expected RUN_STARTED`);
    if (!TERMINAL.has(types.at(-1))) {
      p(`the stream ended without RUN_FINISHED or RUN_ERROR (last event: ${types.at(-1)})`);
    }
    const starts = types.filter((t) => t === 'RUN_STARTED').length;
    const ends = types.filter((t) => TERMINAL.has(t)).length;
    if (starts !== 1) p(`${starts} RUN_STARTED events, expected exactly one per request`);
    if (ends > 1) p(`${ends} terminal events, expected exactly one`);
  }

  // Field rules, on what the client delivered and on the raw wire (1.0 strips unknown fields, so
  // the wire is where a stray null or float would still be visible).
  // Findings are grouped per kind so a systematic mistake is one line, not one per event.
  const fieldChecks = (list, where) => {
    const found = { timestamp: [], null: [], shape: [] };
    list.forEach((e, i) => {
      const tag = `#${i} ${e?.type}`;
      if (!isObj(e)) return found.shape.push(tag);
      if (e.timestamp !== undefined && !Number.isInteger(e.timestamp)) found.timestamp.push(`${tag} (${short(e.timestamp)})`);
      for (const path of findNulls(e, '', [])) found.null.push(`${tag} at ${path.slice(1) || '(event)'}`);
    });
    const say = (items, what) => {
      if (items.length) p(`${where}: ${what} in ${items.length} place(s): ${items.slice(0, 3).join('; ')}${items.length > 3 ? '; …' : ''}`);
    };
    say(found.shape, 'an event that is not a JSON object');
    say(found.timestamp, 'a non-integer timestamp');
    say(found.null, 'a null value');
    return found.timestamp.length + found.null.length + found.shape.length;
  };
  // The wire is checked only when the client's view was clean (or empty), to avoid saying it twice.
  if (fieldChecks(ev, 'event') === 0) fieldChecks(rec.wire, 'wire');
  for (const e of rec.wire) {
    if (isObj(e) && !KNOWN_TYPES.has(e.type)) p(`wire: unknown event type ${short(e.type)}`);
  }
  const wireTypes = rec.wire.map((e) => e?.type);
  const chunky = wireTypes.some((t) => typeof t === 'string' && t.endsWith('_CHUNK'));
  if (!rec.rejected && !rec.timedOut && !chunky && rec.http?.status === 200 && !isDeepStrictEqual(wireTypes, types)) {
    p(`the client delivered [${rle(types).join(',')}] but the wire carried [${rle(wireTypes.map(String)).join(',')}]`);
  }

  // RUN_STARTED identity, lifecycle of messages and tool calls.
  const rs = ev.find((e) => e.type === 'RUN_STARTED');
  if (rs && isObj(rec.request)) {
    if (rs.threadId !== rec.request.threadId) p(`RUN_STARTED.threadId ${short(rs.threadId)} != input threadId ${rec.request.threadId}`);
    if (rs.runId !== rec.request.runId) p(`RUN_STARTED.runId ${short(rs.runId)} != input runId ${rec.request.runId}`);
  }
  const openText = new Map();
  const openTools = new Map();
  const texts = [];
  const toolCalls = [];
  const results = [];
  const snapshots = [];
  const deltas = [];
  ev.forEach((e, i) => {
    switch (e.type) {
      case 'TEXT_MESSAGE_START': {
        if (openText.has(e.messageId)) p(`#${i} TEXT_MESSAGE_START for already open message ${e.messageId}`);
        const m = { messageId: e.messageId, role: e.role ?? 'assistant', text: '', start: i, end: -1 };
        openText.set(e.messageId, m);
        texts.push(m);
        break;
      }
      case 'TEXT_MESSAGE_CONTENT': {
        const m = openText.get(e.messageId);
        if (!m) p(`#${i} TEXT_MESSAGE_CONTENT outside START/END of message ${e.messageId}`);
        else if (typeof e.delta !== 'string') p(`#${i} TEXT_MESSAGE_CONTENT.delta is not a string`);
        else m.text += e.delta;
        break;
      }
      case 'TEXT_MESSAGE_END': {
        const m = openText.get(e.messageId);
        if (!m) p(`#${i} TEXT_MESSAGE_END for message ${e.messageId} that is not open`);
        else {
          m.end = i;
          openText.delete(e.messageId);
        }
        break;
      }
      case 'TOOL_CALL_START': {
        if (openTools.has(e.toolCallId)) p(`#${i} TOOL_CALL_START for already open tool call ${e.toolCallId}`);
        if (typeof e.toolCallName !== 'string' || !e.toolCallName) p(`#${i} TOOL_CALL_START without toolCallName`);
        const c = { id: e.toolCallId, name: e.toolCallName, parentMessageId: e.parentMessageId, args: '', start: i, end: -1 };
        openTools.set(e.toolCallId, c);
        toolCalls.push(c);
        break;
      }
      case 'TOOL_CALL_ARGS': {
        const c = openTools.get(e.toolCallId);
        if (!c) p(`#${i} TOOL_CALL_ARGS outside START/END of tool call ${e.toolCallId}`);
        else if (typeof e.delta !== 'string') p(`#${i} TOOL_CALL_ARGS.delta is not a string`);
        else c.args += e.delta;
        break;
      }
      case 'TOOL_CALL_END': {
        const c = openTools.get(e.toolCallId);
        if (!c) p(`#${i} TOOL_CALL_END for tool call ${e.toolCallId} that is not open`);
        else {
          c.end = i;
          openTools.delete(e.toolCallId);
          const parsed = tryJson(c.args);
          if (!parsed.ok) p(`tool call ${c.id} (${c.name}): arguments ${short(c.args)} are not JSON: ${parsed.error}`);
          else c.parsed = parsed.value;
        }
        break;
      }
      case 'TOOL_CALL_RESULT': {
        const c = toolCalls.find((t) => t.id === e.toolCallId);
        if (!c) p(`#${i} TOOL_CALL_RESULT for tool call ${e.toolCallId} that this run never started`);
        else if (c.end < 0) p(`#${i} TOOL_CALL_RESULT for tool call ${e.toolCallId} before its TOOL_CALL_END`);
        if (typeof e.messageId !== 'string' || !e.messageId) p(`#${i} TOOL_CALL_RESULT without messageId`);
        if (typeof e.content !== 'string') p(`#${i} TOOL_CALL_RESULT.content is ${typeof e.content}, must be a string (0.0.59 rejects anything else)`);
        if (e.role !== undefined && e.role !== 'tool') p(`#${i} TOOL_CALL_RESULT.role is ${short(e.role)}, expected "tool"`);
        results.push({ ...e, index: i });
        break;
      }
      case 'STATE_SNAPSHOT':
        snapshots.push(i);
        break;
      case 'STATE_DELTA':
        if (!Array.isArray(e.delta)) p(`#${i} STATE_DELTA.delta is not an array of JSON Patch operations`);
        deltas.push(i);
        break;
      case 'RUN_ERROR':
        if (typeof e.message !== 'string' || !e.message.trim()) p(`#${i} RUN_ERROR has an empty message`);
        break;
      default:
        break;
    }
    if (TERMINAL.has(e.type)) {
      for (const id of openText.keys()) p(`#${i} ${e.type} while text message ${id} is still open`);
      for (const id of openTools.keys()) p(`#${i} ${e.type} while tool call ${id} is still open`);
    }
  });

  // The typed callbacks must have fired once per event of their type.
  if (!rec.rejected && !rec.timedOut) {
    for (const [cb, type] of Object.entries(TYPED_CALLBACKS)) {
      const n = types.filter((t) => t === type).length;
      if ((rec.typed[cb] ?? 0) !== n) p(`${cb} fired ${rec.typed[cb] ?? 0} times for ${n} ${type} events`);
    }
  }
  if (rec.failed && !rec.rejected) p(`onRunFailed: ${errText(rec.failed)}`);

  return { problems, types, wireTypes, terminal: types.at(-1) ?? '(no events)', texts, toolCalls, results, snapshots, deltas };
}

// ---------------------------------------------------------------------------------------------
// scenarios: each gets a context and returns details; `ctx.check` records scenario failures

const scenarios = {
  // 1. plain text answer, assembled by the client into agent.messages
  async text(ctx) {
    const user = userMsg('hello there');
    const h = newAgent({ messages: [user] });
    const r = await ctx.run(h, { runId: randomUUID(), tools: [] });
    const a = r.analysis;
    ctx.check(a.terminal === 'RUN_FINISHED', `expected RUN_FINISHED last, got ${a.terminal}`);
    ctx.check(a.texts.length >= 1, 'no TEXT_MESSAGE_START/END');
    ctx.check(a.toolCalls.length === 0, `unexpected tool calls: ${a.toolCalls.map((c) => c.name)}`);
    const m = a.texts.find((t) => t.text.trim());
    ctx.check(m, 'no text message with non-empty content');
    ctx.check(a.types.includes('TEXT_MESSAGE_CONTENT'), 'no TEXT_MESSAGE_CONTENT');
    if (m) {
      const msg = h.agent.messages.find((x) => x.id === m.messageId);
      ctx.check(msg, `agent.messages has no message ${m.messageId}`);
      ctx.check(msg?.role === 'assistant', `agent message ${m.messageId} has role ${msg?.role}`);
      ctx.check(msg?.content === m.text, `agent message content ${short(msg?.content)} != streamed ${short(m.text)}`);
    }
    ctx.check(h.agent.messages[0]?.id === user.id, 'the user message is no longer first in agent.messages');
    return { text: m?.text };
  },

  // 2. Citadel's own action generate_embedding, run inside the run
  async server_action(ctx) {
    const h = newAgent({ messages: [userMsg('please use generate_embedding {"input": "the quick brown fox"}')] });
    const r = await ctx.run(h, { runId: randomUUID(), tools: [] });
    const a = r.analysis;
    ctx.check(a.terminal === 'RUN_FINISHED', `expected RUN_FINISHED last, got ${a.terminal}`);
    const call = a.toolCalls.find((c) => c.name === 'generate_embedding');
    if (!ctx.check(call, `no TOOL_CALL_START for generate_embedding (tool calls: ${a.toolCalls.map((c) => c.name).join(',') || 'none'})`)) return {};
    ctx.check(isDeepStrictEqual(call.parsed, { input: 'the quick brown fox' }), `arguments ${short(call.args)} != {"input":"the quick brown fox"}`);
    const res = a.results.find((x) => x.toolCallId === call.id);
    if (!ctx.check(res, `no TOOL_CALL_RESULT for ${call.id}`)) return {};
    let dims;
    if (ctx.check(typeof res.content === 'string', 'TOOL_CALL_RESULT.content is not a string')) {
      const parsed = tryJson(res.content);
      if (ctx.check(parsed.ok, `TOOL_CALL_RESULT.content is not JSON: ${short(res.content)}`)) {
        const emb = parsed.value?.data?.[0]?.embedding;
        ctx.check(Array.isArray(emb) && emb.length > 0, `content has no data[0].embedding array: ${short(res.content)}`);
        if (Array.isArray(emb)) {
          dims = emb.length;
          ctx.check(emb.every((x) => typeof x === 'number' && Number.isFinite(x)), 'embedding has non-numbers');
        }
      }
    }
    const after = a.texts.filter((t) => t.start > res.index);
    ctx.check(after.some((t) => t.text.startsWith('tool result:')), `no text starting with 'tool result:' after the result (texts: ${short(after.map((t) => t.text))})`);
    // The client turns the events into an assistant message with the call plus a tool message.
    const msgs = h.agent.messages;
    ctx.check(msgs.some((m) => m.role === 'assistant' && m.toolCalls?.some((t) => t.id === call.id)), 'agent.messages has no assistant message carrying the tool call');
    ctx.check(msgs.some((m) => m.role === 'tool' && m.toolCallId === call.id && m.content === res.content), 'agent.messages has no tool message with the result');
    return { toolCallId: call.id, dims, model: tryJson(res.content).value?.model };
  },

  // 3. a frontend tool: left to the client, then a follow-up run with the tool result
  async frontend_tool(ctx) {
    const tools = [
      {
        name: 'show_banner',
        description: 'Shows a banner in the UI',
        parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
      },
    ];
    const h = newAgent({ messages: [userMsg('use show_banner {"text": "hi from the test"}')] });
    const r1 = await ctx.run(h, { runId: randomUUID(), tools }, 'run1');
    const a = r1.analysis;
    ctx.check(a.terminal === 'RUN_FINISHED', `run1: expected RUN_FINISHED last, got ${a.terminal}`);
    const call = a.toolCalls.find((c) => c.name === 'show_banner');
    if (!ctx.check(call, `run1: no TOOL_CALL_START for show_banner (tool calls: ${a.toolCalls.map((c) => c.name).join(',') || 'none'})`)) return {};
    ctx.check(call.end >= 0, 'run1: no TOOL_CALL_END');
    ctx.check(isDeepStrictEqual(call.parsed, { text: 'hi from the test' }), `run1: arguments ${short(call.args)} != {"text":"hi from the test"}`);
    ctx.check(a.results.length === 0, `run1: TOOL_CALL_RESULT for a client tool (${a.results.map((x) => x.toolCallId)})`);
    ctx.check(a.toolCalls.length === 1, `run1: ${a.toolCalls.length} tool calls, expected 1`);
    // 1.0 reports the unanswered calls; 0.0.59 has no such field.
    if (Array.isArray(r1.finished?.pendingToolCallIds)) {
      ctx.check(r1.finished.pendingToolCallIds.includes(call.id), `run1: pendingToolCallIds ${short(r1.finished.pendingToolCallIds)} lacks ${call.id}`);
    }
    const holder = h.agent.messages.find((m) => m.role === 'assistant' && m.toolCalls?.some((t) => t.id === call.id));
    if (!ctx.check(holder, 'run1: agent.messages has no assistant message with the tool call')) return {};
    const tc = holder.toolCalls.find((t) => t.id === call.id);
    ctx.check(tc.function?.name === 'show_banner', `run1: assembled tool call name ${tc.function?.name}`);
    ctx.check(isDeepStrictEqual(tryJson(tc.function?.arguments).value, { text: 'hi from the test' }), `run1: assembled arguments ${short(tc.function?.arguments)}`);
    if (!ctx.ok()) return { toolCallId: call.id };

    const toolMsg = { id: `tool-${randomUUID()}`, role: 'tool', toolCallId: call.id, content: 'banner shown' };
    if (typeof h.agent.addMessage === 'function') h.agent.addMessage(toolMsg);
    else h.agent.messages.push(toolMsg);
    const r2 = await ctx.run(h, { runId: randomUUID(), tools }, 'run2');
    const b = r2.analysis;
    ctx.check(b.terminal === 'RUN_FINISHED', `run2: expected RUN_FINISHED last, got ${b.terminal}`);
    const sent = Array.isArray(r2.request?.messages) ? r2.request.messages : [];
    ctx.check(sent.at(-1)?.role === 'tool' && sent.at(-1)?.toolCallId === call.id, 'run2: the request did not end with the tool message');
    ctx.check(sent.some((m) => m.role === 'assistant' && m.toolCalls?.some((t) => t.id === call.id)), 'run2: the request lacks the assistant tool-call message');
    ctx.check(r2.request?.threadId === r1.request?.threadId, 'run2: different threadId');
    ctx.check(b.toolCalls.length === 0, `run2: unexpected tool calls ${b.toolCalls.map((c) => c.name)}`);
    const answer = b.texts.find((t) => t.text.startsWith('tool result: banner shown'));
    ctx.check(answer, `run2: no text 'tool result: banner shown' (texts: ${short(b.texts.map((t) => t.text))})`);
    return { toolCallId: call.id, answer: answer?.text };
  },

  // 4. execute_workflow streams its progress as shared state
  async workflow_state(ctx) {
    const h = newAgent({ messages: [userMsg('use execute_workflow {"kind": "sleep", "params": {"ms": 600, "steps": 3}}')] });
    const r = await ctx.run(h, { runId: randomUUID(), tools: [] });
    const a = r.analysis;
    ctx.check(a.terminal === 'RUN_FINISHED', `expected RUN_FINISHED last, got ${a.terminal}`);
    const call = a.toolCalls.find((c) => c.name === 'execute_workflow');
    if (!ctx.check(call, `no TOOL_CALL_START for execute_workflow (tool calls: ${a.toolCalls.map((c) => c.name).join(',') || 'none'})`)) return {};
    ctx.check(isDeepStrictEqual(call.parsed, { kind: 'sleep', params: { ms: 600, steps: 3 } }), `arguments ${short(call.args)}`);
    ctx.check(a.snapshots.length >= 1, 'no STATE_SNAPSHOT');
    ctx.check(a.deltas.length >= 1, 'no STATE_DELTA');
    if (a.snapshots.length && a.deltas.length) ctx.check(a.snapshots[0] < a.deltas[0], 'a STATE_DELTA came before the first STATE_SNAPSHOT');
    const res = a.results.find((x) => x.toolCallId === call.id);
    let resultValue;
    if (ctx.check(res, `no TOOL_CALL_RESULT for ${call.id}`)) {
      const parsed = tryJson(res.content);
      if (ctx.check(parsed.ok && isObj(parsed.value), `TOOL_CALL_RESULT.content is not a JSON object: ${short(res.content)}`)) {
        resultValue = parsed.value;
        ctx.check(resultValue.state === 'SUCCESS', `result state is ${short(resultValue.state)}, expected SUCCESS`);
      }
    }
    const state = h.agent.state;
    const wfs = state?.workflows;
    if (!ctx.check(isObj(wfs), `agent.state.workflows is not an object: ${short(state)}`)) return {};
    // The workflow's id comes from the result; without one, accept the only workflow in the state.
    let id = resultValue?.id ?? resultValue?.workflow_id ?? resultValue?.workflowId;
    let idFrom = 'result';
    if (id === undefined && Object.keys(wfs).length === 1) [id, idFrom] = [Object.keys(wfs)[0], 'state'];
    const wf = id !== undefined ? wfs[id] : undefined;
    if (!ctx.check(isObj(wf), `agent.state.workflows[${short(id)}] is missing (keys: ${Object.keys(wfs)})`)) return { id };
    ctx.check(wf.state === 'SUCCESS', `workflows[id].state is ${short(wf.state)}`);
    ctx.check(wf.kind === 'sleep', `workflows[id].kind is ${short(wf.kind)}`);
    ctx.check(isObj(wf.progress) && 'done' in wf.progress && 'total' in wf.progress, `workflows[id].progress is ${short(wf.progress)}`);
    return { id, idFrom, progress: wf.progress, snapshots: a.snapshots.length, deltas: a.deltas.length, stateChanges: r.stateChanges };
  },

  // 5. an upstream failure is a RUN_ERROR inside a well-formed stream
  async upstream_error(ctx) {
    const h = newAgent({ messages: [userMsg('hello')] });
    const r = await ctx.run(h, { runId: randomUUID(), tools: [], forwardedProps: { model: 'no-such-model' } });
    const a = r.analysis;
    ctx.check(a.terminal === 'RUN_ERROR', `expected RUN_ERROR last, got ${a.terminal}`);
    ctx.check(!a.types.includes('RUN_FINISHED'), 'RUN_FINISHED in a failed run');
    ctx.check(r.runErrorEvents.length === 1, `onRunErrorEvent fired ${r.runErrorEvents.length} times`);
    const msg = r.runErrorEvents[0]?.message;
    ctx.check(typeof msg === 'string' && msg.trim(), 'RUN_ERROR.message is empty');
    return { message: msg, code: r.runErrorEvents[0]?.code };
  },

  // 6. client state the server does not touch survives the run
  async state_roundtrip(ctx) {
    const h = newAgent({ messages: [userMsg('hello')], state: { note: 'kept' } });
    const r = await ctx.run(h, { runId: randomUUID(), tools: [] });
    const a = r.analysis;
    ctx.check(r.request?.state?.note === 'kept', `the request did not carry the state: ${short(r.request?.state)}`);
    ctx.check(a.terminal === 'RUN_FINISHED', `expected RUN_FINISHED last, got ${a.terminal}`);
    ctx.check(h.agent.state?.note === 'kept', `agent.state after the run is ${short(h.agent.state)}, note was dropped`);
    return { state: h.agent.state };
  },
};

// ---------------------------------------------------------------------------------------------
// main

async function runScenario(name) {
  const t0 = Date.now();
  const deadline = t0 + TIMEOUT_MS;
  const problems = [];
  const runs = [];
  const ctx = {
    check(cond, msg) {
      if (!cond) problems.push(msg);
      return Boolean(cond);
    },
    ok: () => problems.length === 0,
    async run(handle, params, label = 'run') {
      const rec = await runOnce(handle, params, deadline, label);
      runs.push(rec);
      const prefix = label === 'run' ? '' : `${label}: `;
      for (const m of rec.analysis.problems) problems.push(prefix + m);
      return rec;
    },
  };
  let details = {};
  try {
    details = (await scenarios[name](ctx)) ?? {};
  } catch (e) {
    problems.push(`the test itself threw: ${e?.stack ?? e}`);
  }
  const ok = problems.length === 0 && runs.length > 0;
  if (runs.length === 0 && problems.length === 0) problems.push('no run happened');
  const summary = {
    scenario: name,
    client: CLIENT_LABEL,
    ok,
    ms: Date.now() - t0,
    runs: runs.map((r) => ({
      label: r.label,
      http: r.http?.status,
      ms: r.ms,
      events: rle(r.analysis.types),
      ...(!isDeepStrictEqual(r.analysis.types, r.analysis.wireTypes) && { wire: rle(r.analysis.wireTypes.map(String)) }),
    })),
    ...details,
    ...(!ok && { problems }),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (!ok) {
    const lines = [`FAIL [client ${CLIENT_LABEL}] ${name}:`];
    for (const m of problems.slice(0, 20)) lines.push(`  - ${m}`);
    if (problems.length > 20) lines.push(`  … ${problems.length - 20} more`);
    for (const r of runs) {
      lines.push(`  ${r.label} events seen by the client: ${rle(r.events.map(describe)).join(', ') || '(none)'}`);
      if (r.afterAbort?.length) lines.push(`  ${r.label} after the test aborted the run: ${r.afterAbort.map(describe).join(', ')}`);
      if (!isDeepStrictEqual(r.analysis.types, r.analysis.wireTypes)) {
        lines.push(`  ${r.label} events on the wire: ${rle(r.wire.map((e) => (isObj(e) ? describe(e) : '?'))).join(', ') || '(none)'}`);
      }
      if (VERBOSE) {
        lines.push(`  ${r.label} request: ${short(r.request, 2000)}`);
        for (const e of r.wire) lines.push(`    ${short(e, 400)}`);
      }
    }
    process.stderr.write(`${lines.join('\n')}\n`);
  }
  return ok;
}

let passed = 0;
for (const name of selected) if (await runScenario(name)) passed += 1;
const allOk = passed === selected.length;
process.stdout.write(
  `${JSON.stringify({ summary: true, client: CLIENT_LABEL, url: ENDPOINT, passed, failed: selected.length - passed, ok: allOk })}\n`,
);
process.exit(allOk ? 0 : 1);
