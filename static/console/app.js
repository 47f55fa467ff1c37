// The Vantum call console: talk to the agent by voice or text and hear it answer while the
// model is still writing. Speaks the protocol of shared/PROTOCOL.md over /ws.
import { decode, encode } from "./msgpack.js";

const $ = (id) => document.getElementById(id);
const els = {
  connect: $("connect"), hangup: $("hangup"), status: $("status"), session: $("session-id"),
  transcript: $("transcript"), form: $("text-form"), text: $("text-input"), send: $("send"),
  talk: $("talk"), level: $("level"), errors: $("errors"), voice: $("voice"),
  name: $("prospect-name"), company: $("prospect-company"), industry: $("prospect-industry"),
  timings: $("timings"), indicator: $("indicator"), partial: $("partial"),
  modes: document.querySelectorAll('input[name="mode"]'), voiceRow: document.querySelector(".voice-row"),
};

// Read-only counters for tests and curious humans.
const hook = {
  state: "idle", sessionId: "", framesDecoded: 0, framesScheduled: 0, chunksShown: 0,
  repliesCompleted: 0, repliesStopped: 0, errors: [], lastTimings: null, connects: 0, endedReason: "",
  speechStarted: 0, speechStopped: 0, partials: [], indicatorSeen: [], chunksSent: 0,
};
window.vantumConsole = hook;

let socket = null;
let wantConnected = false;
let retryDelay = 500;
let endedBy = null; // {reason, message} once the server ended the call on purpose
let playback = null; // AudioContext for the agent's voice
let playhead = 0;
let sources = [];
let currentUtterance = null;
let replies = new Map(); // utteranceId -> {row, chunks}
let turn = null; // {sentAt, firstText, firstAudio}
let mic = null;
let pressing = false; // the talk button is held (the microphone may still be starting)
let sttAvailable = els.voiceRow.dataset.stt === "yes"; // the page says so before anyone presses
let userSpeaking = false; // between voicechat.speech.started and .stopped (hands-free)

const handsFree = () => sttAvailable && [...els.modes].some((m) => m.checked && m.value === "hands-free");

function setState(state, label) {
  hook.state = state;
  els.status.textContent = label || state;
  els.status.dataset.state = state;
  const open = state === "connected";
  els.connect.disabled = open || state === "connecting";
  els.hangup.disabled = !open && state !== "connecting" && state !== "reconnecting";
  els.send.disabled = !open;
  els.talk.disabled = !open || !sttAvailable;
  showIndicator();
}

// "listening / you are speaking / agent speaking": what the caller needs to know at a glance.
function showIndicator() {
  const agentPlaying = sources.length > 0;
  let state = "off";
  let label = sttAvailable ? "Microphone off" : "No speech to text: type";
  if (userSpeaking) [state, label] = ["user", "You are speaking"];
  else if (agentPlaying) [state, label] = ["agent", "Agent speaking"];
  else if (mic && mic.continuous) [state, label] = ["listening", "Listening"];
  else if (mic) [state, label] = ["user", "Recording"];
  if (els.indicator.dataset.state !== state || els.indicator.textContent !== label) {
    els.indicator.dataset.state = state;
    els.indicator.textContent = label;
    if (!hook.indicatorSeen.includes(state)) hook.indicatorSeen.push(state);
  }
}
setInterval(showIndicator, 100);

function showError(message) {
  hook.errors.push(message);
  const item = document.createElement("li");
  item.textContent = message;
  els.errors.prepend(item);
  while (els.errors.children.length > 5) els.errors.lastChild.remove();
}

function send(eventType, payload = {}) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(encode({ eventType, eventId: crypto.randomUUID(), sessionId: hook.sessionId, payload }));
}

const END_REASONS = {
  agent_ended: "The agent ended the call.",
  staff_ended: "The call was ended by staff.",
  idle_timeout: "The call was ended after a long silence.",
  max_duration: "The call reached its maximum length.",
  server_shutdown: "The server is restarting.",
};

function connect() {
  wantConnected = true;
  endedBy = null;
  hook.connects += 1;
  setState("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // With VANTUM_CALL_TOKENS set, open the console as /?token=... and the call carries it.
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (message) => {
    if (typeof message.data === "string") return; // the protocol is binary only
    handle(decode(new Uint8Array(message.data)));
  };
  socket.onclose = () => {
    socket = null;
    stopRecording(false);
    if (endedBy) {
      // A deliberate end (protocol: voicechat.call.ended): never redial on our own.
      wantConnected = false;
      const text = endedBy.message || END_REASONS[endedBy.reason] || `The call ended (${endedBy.reason}).`;
      setState("ended", `${text} Press Connect to call again.`);
    } else if (wantConnected) {
      setState("reconnecting", `Connection lost, reconnecting in ${Math.round(retryDelay / 100) / 10}s…`);
      setTimeout(() => wantConnected && connect(), retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    } else {
      setState("idle", "Not connected");
    }
  };
}

function hangUp() {
  wantConnected = false;
  stopPlayback();
  if (socket) socket.close(1000);
  setState("idle", "Not connected");
}

function sendSessionUpdate() {
  send("voicechat.session.update", {
    prospect: { name: els.name.value.trim(), company: els.company.value.trim(), industry: els.industry.value.trim() },
    voiceId: els.voice.value || undefined,
    turnDetection: handsFree() ? "server" : "client",
  });
}

function applyMode() {
  els.talk.hidden = handsFree() || !sttAvailable;
  if (!socket || hook.state !== "connected") return;
  stopRecording(false);
  sendSessionUpdate();
  if (handsFree()) startListening();
}

// ------------------------------------------------------------------ server events
function handle(event) {
  const p = event.payload || {};
  switch (event.eventType) {
    case "connection.ack":
      hook.sessionId = event.sessionId;
      els.session.textContent = event.sessionId;
      retryDelay = 500;
      if (p.capabilities) sttAvailable = Boolean(p.capabilities.speechToText);
      setState("connected", "Connected");
      applyMode();
      break;
    case "voicechat.speech.started":
      hook.speechStarted += 1;
      userSpeaking = true;
      els.partial.textContent = "";
      showIndicator();
      break;
    case "voicechat.speech.stopped":
      hook.speechStopped += 1;
      userSpeaking = false;
      turn = { sentAt: performance.now(), firstText: null, firstAudio: null };
      showIndicator();
      break;
    case "voicechat.transcript.partial":
      hook.partials.push(p.text);
      els.partial.textContent = p.text;
      break;
    case "voicechat.transcript.user":
      els.partial.textContent = "";
      addRow("user", p.text);
      break;
    case "voicechat.response.start":
      startReply(p.utteranceId);
      break;
    case "voicechat.response.text":
      addChunk(p.utteranceId, p.index, p.text);
      break;
    case "voicechat.response.chunk":
      playChunk(p.utteranceId, p.audio, p.sampleRate);
      break;
    case "voicechat.response.complete":
      finishReply(p.utteranceId, p.metrics || {});
      break;
    case "voicechat.response.stop":
      stopReply(p.utteranceId);
      break;
    case "voicechat.error":
      showError(p.message);
      break;
    case "voicechat.call.ended":
      endedBy = { reason: p.reason || "", message: p.message || "" };
      hook.endedReason = endedBy.reason;
      wantConnected = false;
      break;
    default:
      if (event.eventType.endsWith(".error")) showError(p.message || "Unknown error");
  }
}

function addRow(role, text) {
  const row = document.createElement("div");
  row.className = `row ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Agent";
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text || "";
  row.append(who, body);
  els.transcript.append(row);
  els.transcript.scrollTop = els.transcript.scrollHeight;
  return row;
}

function startReply(utteranceId) {
  if (currentUtterance && currentUtterance !== utteranceId) stopPlayback();
  currentUtterance = utteranceId;
  const row = addRow("agent", "");
  row.dataset.utterance = utteranceId;
  replies.set(utteranceId, { row, body: row.querySelector(".body") });
}

function addChunk(utteranceId, index, text) {
  if (!replies.has(utteranceId)) startReply(utteranceId);
  const reply = replies.get(utteranceId);
  const span = document.createElement("span");
  span.className = "chunk";
  span.dataset.index = index;
  span.textContent = text;
  reply.body.append(span);
  hook.chunksShown += 1;
  if (turn && turn.firstText === null) {
    turn.firstText = performance.now() - turn.sentAt;
    showTimings();
  }
}

function badge(row, label, kind) {
  const b = document.createElement("span");
  b.className = `badge ${kind}`;
  b.textContent = label;
  row.querySelector(".who").append(b);
}

function finishReply(utteranceId, metrics) {
  const reply = replies.get(utteranceId);
  hook.repliesCompleted += 1;
  if (reply && metrics.fallbackTier) badge(reply.row, `fallback ${metrics.fallbackTier}`, "fallback");
}

function stopReply(utteranceId) {
  hook.repliesStopped += 1;
  if (utteranceId === currentUtterance) stopPlayback();
  const reply = replies.get(utteranceId);
  if (reply && !reply.row.querySelector(".badge.interrupted")) badge(reply.row, "interrupted", "interrupted");
}

// ------------------------------------------------------------------ playback
function ensurePlayback() {
  if (!playback) playback = new AudioContext();
  if (playback.state === "suspended") playback.resume();
  return playback;
}

function playChunk(utteranceId, audio, sampleRate) {
  if (utteranceId !== currentUtterance) {
    stopPlayback();
    currentUtterance = utteranceId;
  }
  const samples = new Int16Array(audio.buffer, audio.byteOffset, Math.floor(audio.byteLength / 2));
  hook.framesDecoded += 1;
  if (turn && turn.firstAudio === null) {
    turn.firstAudio = performance.now() - turn.sentAt;
    showTimings();
  }
  const ctx = ensurePlayback();
  const buffer = ctx.createBuffer(1, samples.length, sampleRate);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  // Back to back on the audio clock: no gaps between frames or chunks.
  playhead = Math.max(playhead, ctx.currentTime + 0.02);
  source.start(playhead);
  playhead += buffer.duration;
  sources.push(source);
  source.onended = () => { sources = sources.filter((s) => s !== source); };
  hook.framesScheduled += 1;
}

function stopPlayback() {
  for (const source of sources) {
    try { source.stop(); } catch { /* already stopped */ }
  }
  sources = [];
  playhead = 0;
}

// ------------------------------------------------------------------ turns
function beginTurn() {
  stopPlayback(); // barge-in: the server stops the reply too
  turn = { sentAt: performance.now(), firstText: null, firstAudio: null };
}

function showTimings() {
  const fmt = (v) => (v === null ? "…" : `${Math.round(v)} ms`);
  hook.lastTimings = { firstChunkMs: turn.firstText, firstAudioMs: turn.firstAudio };
  els.timings.textContent = `first chunk ${fmt(turn.firstText)} · first audio ${fmt(turn.firstAudio)}`;
}

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value.trim();
  if (!text) return;
  ensurePlayback();
  beginTurn();
  send("voicechat.text.input", { text });
  els.text.value = "";
});

// The browser's echo canceller keeps the agent's own voice (from the speakers) out of the
// microphone: without it, hands-free would hear the agent and interrupt it.
const MIC_CONSTRAINTS = {
  audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
};

async function openMic(continuous) {
  const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(els.talk.dataset.worklet);
  const node = new AudioWorkletNode(ctx, "vantum-recorder");
  const input = ctx.createMediaStreamSource(stream);
  input.connect(node);
  mic = { stream, ctx, node, continuous };
  send("voicechat.audio.start", { samplingRate: ctx.sampleRate, voiceId: els.voice.value || undefined });
  node.port.onmessage = ({ data }) => {
    const pcm = new Int16Array(data.length);
    let energy = 0;
    for (let i = 0; i < data.length; i++) {
      const s = Math.max(-1, Math.min(1, data[i]));
      pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
      energy += s * s;
    }
    els.level.value = Math.min(1, Math.sqrt(energy / data.length) * 4);
    send("voicechat.audio.chunk", { audio: new Uint8Array(pcm.buffer) });
    hook.chunksSent += 1;
  };
  showIndicator();
}

// Hands-free: the microphone streams all the time; the server hears when a turn starts and ends.
let listeningStarts = false;
async function startListening() {
  if (mic || listeningStarts || !socket) return;
  listeningStarts = true;
  try {
    await openMic(true);
    if (!handsFree() || !socket) stopRecording(false); // switched or hung up meanwhile
  } catch (error) {
    showError(`Microphone unavailable: ${error.message}`);
  } finally {
    listeningStarts = false;
  }
}

async function startRecording() {
  if (handsFree() || mic || pressing || !socket || !sttAvailable) return;
  pressing = true;
  ensurePlayback();
  try {
    await openMic(false);
    stopPlayback();
    els.talk.classList.add("recording");
    els.talk.textContent = "Release to send";
    if (!pressing) stopRecording(); // released while the microphone was starting
  } catch (error) {
    pressing = false;
    showError(`Microphone unavailable: ${error.message}`);
  }
}

function stopRecording(sendEnd = true) {
  pressing = false;
  if (!mic) return;
  const wasContinuous = mic.continuous;
  mic.node.port.onmessage = null;
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.ctx.close();
  mic = null;
  userSpeaking = false;
  els.level.value = 0;
  els.talk.classList.remove("recording");
  els.talk.textContent = "Hold to talk";
  if (sendEnd && !wasContinuous) {
    beginTurn();
    send("voicechat.audio.end", {});
  }
  showIndicator();
}

els.talk.addEventListener("pointerdown", startRecording);
els.talk.addEventListener("pointerup", () => stopRecording());
els.talk.addEventListener("pointerleave", () => stopRecording());
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && e.target === document.body && !e.repeat) { e.preventDefault(); startRecording(); }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && e.target === document.body) { e.preventDefault(); stopRecording(); }
});
els.connect.addEventListener("click", () => { ensurePlayback(); connect(); });
els.hangup.addEventListener("click", hangUp);
for (const radio of els.modes) radio.addEventListener("change", applyMode);
for (const field of [els.voice, els.name, els.company, els.industry]) field.addEventListener("change", sendSessionUpdate);

setState("idle", "Not connected");
els.talk.hidden = handsFree() || !sttAvailable;
