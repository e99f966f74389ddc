// Live microphone streaming over WS /v1/audio/stream (docs/streaming.md): f32le frames of about 20 ms at the
// microphone's own rate go out; partials, drafts and finals come back.
import { Microphone, concatBlocks } from "./capture.js";

const $ = (id) => document.getElementById(id);
const FRAMES_PER_SECOND = 50;

function streamUrl(sampleRate, { language, steps, key }) {
  const query = new URLSearchParams({ sample_rate: String(sampleRate), encoding: "f32le", drafts: "true" });
  if (language) query.set("language", language);
  if (steps) query.set("denoising_steps", steps);
  if (key) query.set("api_key", key); // browsers cannot set headers on a WebSocket
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/audio/stream?${query}`;
}

function clock(seconds) {
  return seconds.toFixed(2).padStart(6, " ");
}

export class LiveSession {
  constructor(options, onError) {
    this.options = options;
    this.onError = onError;
    this.blocks = [];
    this.pending = 0;
    this.sent = 0;
    this.ready = false;
    this.microphone = new Microphone((block) => this.take(block));
  }

  async start() {
    $("live-finals").replaceChildren();
    $("live-partial").textContent = "";
    this.status("starting");
    this.sampleRate = await this.microphone.start();
    this.frameSamples = Math.round(this.sampleRate / FRAMES_PER_SECOND);
    $("live-sent").dataset.sampleRate = this.sampleRate;
    this.socket = new WebSocket(streamUrl(this.sampleRate, this.options));
    this.socket.binaryType = "arraybuffer";
    this.socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.socket.onclose = (event) => this.closed(event);
  }

  // Sends the rest of the audio and asks for the remaining finals; the server then closes with 1000.
  async stop() {
    this.status("finishing");
    await this.microphone.stop();
    if (this.socket.readyState === WebSocket.OPEN) {
      this.send(true);
      this.socket.send(JSON.stringify({ type: "end" }));
    } else {
      this.socket.close(); // still connecting: nothing was sent, so there is nothing to finalize
    }
  }

  // Microphone blocks are kept until the server is ready, then sent in frames of about 20 ms.
  take(block) {
    this.blocks.push(block);
    this.pending += block.length;
    if (this.ready) this.send(false);
  }

  // Sends whole ~20 ms frames (and, when `everything`, the short rest), however much audio is waiting: the
  // server refuses frames over ASR_STREAM_MAX_FRAME_BYTES, and audio held until `ready` can be seconds long.
  send(everything) {
    if (this.pending === 0) return;
    const audio = concatBlocks(this.blocks);
    let offset = 0;
    while (audio.length - offset >= this.frameSamples || (everything && offset < audio.length)) {
      const frame = audio.slice(offset, offset + this.frameSamples);
      this.socket.send(frame.buffer);
      offset += frame.length;
    }
    const rest = audio.slice(offset);
    this.blocks = rest.length ? [rest] : [];
    this.pending = rest.length;
    this.sent += offset;
    const seconds = this.sent / this.sampleRate;
    $("live-sent").dataset.seconds = seconds.toFixed(3);
    $("live-sent").textContent = `${seconds.toFixed(1)} s sent`;
  }

  receive(message) {
    if (message.type === "ready") {
      this.ready = true;
      this.status("live");
      this.send(false);
    } else if (message.type === "partial") {
      $("live-partial").textContent = message.text;
    } else if (message.type === "draft") {
      $("live-partial").textContent = `step ${message.step}/${message.of}: ${message.text}`;
    } else if (message.type === "final") {
      this.addFinal(message);
    } else if (message.type === "error") {
      this.onError(`${message.code}: ${message.message}`);
    }
  }

  addFinal(final) {
    $("live-partial").textContent = "";
    const item = document.createElement("li");
    item.dataset.segmentId = final.segment_id;
    item.dataset.reason = final.reason || "";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `[${clock(final.start)} - ${clock(final.end)}]`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = final.text;
    item.append(time, text);
    $("live-finals").append(item);
  }

  closed(event) {
    this.microphone.stop();
    this.status(`closed (${event.code})`);
    $("live-status").dataset.closeCode = event.code;
    $("live-start").disabled = false;
    $("live-stop").disabled = true;
  }

  status(text) {
    $("live-status").textContent = text;
  }
}
