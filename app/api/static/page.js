// The page's controls: a clip (file or recording) through the streamed upload API, or a live stream.
import { readEvents } from "./sse.js";
import { Microphone, concatBlocks, encodeWav } from "./capture.js";
import { Anneal, clearResult, showResult, showStableText } from "./result.js";
import { LiveSession } from "./live.js";

const $ = (id) => document.getElementById(id);

function options() {
  return { language: $("language").value, steps: $("steps").value.trim(), key: $("api-key").value.trim() };
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function uploadForm(blob, name, { language, steps }) {
  const form = new FormData();
  form.append("file", blob, name);
  form.append("response_format", "json");
  form.append("stream", "true");
  form.append("stream_drafts", "true"); // the per-step drafts, beside OpenAI's delta and done events
  if (language) form.append("language", language);
  if (steps) form.append("denoising_steps", steps);
  return form;
}

// Follows one streamed transcription: drafts anneal on the canvas; text deltas show what is settled; the
// final event (or OpenAI's done event) carries the result.
async function transcribe(blob, name) {
  showError("");
  clearResult();
  const anneal = new Anneal();
  const opts = options();
  $("clip-status").textContent = "uploading";
  $("transcribe").disabled = $("record").disabled = true; // one clip at a time
  let stable = "";
  let result = {};
  try {
    const response = await fetch("/v1/audio/transcriptions", {
      method: "POST", body: uploadForm(blob, name, opts),
      headers: opts.key ? { Authorization: `Bearer ${opts.key}` } : {},
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    $("clip-status").textContent = "annealing";
    for await (const event of readEvents(response)) {
      if (event.type === "transcript.text.draft") {
        anneal.show(event);
      } else if (event.type === "transcript.text.delta") {
        showStableText((stable += event.delta));
      } else if (event.type === "transcript.text.done") {
        result = event; // the json body: segments, language and timing
        anneal.settle();
        showResult(result);
      } else if (event.type === "error") {
        throw new Error(event.error ? event.error.message : "transcription failed");
      }
    }
    if (!("text" in result)) throw new Error("the stream ended without a result");
    $("clip-status").textContent = "done";
  } catch (err) {
    showError(err.message);
    $("clip-status").textContent = "failed";
  } finally {
    $("transcribe").disabled = !$("file").files.length;
    $("record").disabled = false;
  }
}

let recording = null;

async function toggleRecording() {
  if (!recording) {
    const blocks = [];
    let samples = 0;
    const microphone = new Microphone((block) => {
      blocks.push(block);
      samples += block.length;
      const seconds = samples / microphone.sampleRate;
      $("clip-status").dataset.seconds = seconds.toFixed(3);
      $("clip-status").textContent = `recording ${seconds.toFixed(1)} s`;
    });
    try {
      const sampleRate = await microphone.start();
      recording = { microphone, blocks, sampleRate };
    } catch (err) {
      showError(`microphone: ${err.message}`);
      return;
    }
    $("record").textContent = "Stop and transcribe";
    $("clip-status").textContent = "recording";
    return;
  }
  const { microphone, blocks, sampleRate } = recording;
  recording = null;
  await microphone.stop();
  $("record").textContent = "Record";
  await transcribe(encodeWav(concatBlocks(blocks), sampleRate), "recording.wav");
}

let live = null;

async function startLive() {
  showError("");
  $("live-start").disabled = true;
  live = new LiveSession(options(), showError);
  try {
    await live.start();
    $("live-stop").disabled = false;
  } catch (err) {
    showError(`microphone: ${err.message}`);
    $("live-status").textContent = "idle";
    $("live-start").disabled = false;
  }
}

$("file").addEventListener("change", () => { $("transcribe").disabled = !$("file").files.length; });
$("transcribe").addEventListener("click", () => {
  const file = $("file").files[0];
  if (file) transcribe(file, file.name);
});
$("record").addEventListener("click", toggleRecording);
$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => { $("live-stop").disabled = true; live.stop(); });
document.body.dataset.loaded = "true";
