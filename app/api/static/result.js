// Rendering of one clip's transcription: the annealing canvas, then the result with segments and a timing chart.

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

// Shows the drafts of the denoising canvas one step after another; words that changed since the previous
// step are marked, so the text visibly settles.
export class Anneal {
  constructor() {
    this.previous = [];
    $("anneal").replaceChildren();
    $("drafts").replaceChildren();
    $("anneal-step").textContent = "";
    $("anneal-progress").value = 0;
  }

  show({ step, of, text }) {
    const words = text.split(/(\s+)/);
    const spans = words.map((word, i) => {
      const span = document.createElement("span");
      span.textContent = word;
      if (word.trim() && word !== this.previous[i]) span.className = "changed";
      return span;
    });
    this.previous = words;
    $("anneal").replaceChildren(...spans);
    $("anneal-step").textContent = `step ${step} of ${of}`;
    $("anneal-progress").max = of;
    $("anneal-progress").value = step;
    const item = document.createElement("li");
    item.dataset.step = step;
    item.textContent = text;
    $("drafts").append(item);
    this.last = { step, of };
  }

  // The job is over: adaptive stopping may have ended it before its step budget.
  settle() {
    if (!this.last) return;
    const { step, of } = this.last;
    $("anneal-step").textContent = step < of ? `settled after ${step} of ${of} steps` : `all ${of} steps`;
    $("anneal-progress").max = step;
  }
}

export function clearResult() {
  $("result").dataset.state = "empty";
  $("result-text").textContent = "";
  $("result-meta").textContent = "";
  $("segments").tBodies[0].replaceChildren();
  $("timing-chart").replaceChildren();
  $("timing-summary").textContent = "";
}

// Text that can no longer change, while the rest is still being decoded.
export function showStableText(text) {
  $("result-text").textContent = text;
  $("result").dataset.state = "partial";
}

// The final result: the json body of the API (text, language, duration, model, segments, timing).
export function showResult(body) {
  $("result-text").textContent = body.text;
  const meta = [];
  if (body.language) meta.push(`language ${body.language}`);
  if (body.duration !== undefined) meta.push(`${body.duration.toFixed(2)} s of audio`);
  if (body.model) meta.push(`model ${body.model}`);
  $("result-meta").textContent = meta.join(" · ");
  showSegments(body.segments || []);
  if (body.timing) showTiming(body.timing);
  $("result").dataset.state = "done";
}

function showSegments(segments) {
  const rows = segments.map((s) => {
    const row = document.createElement("tr");
    for (const value of [s.id, s.start.toFixed(2), s.end.toFixed(2), s.language || "", s.text]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  });
  $("segments").tBodies[0].replaceChildren(...rows);
}

function svgNode(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A bar per denoising step (milliseconds), with the accepted slots and entropy in each bar's tooltip.
function showTiming(timing) {
  const steps = timing.steps || [];
  const width = 600, height = 140, top = 16, bottom = 18;
  const chart = $("timing-chart");
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const most = Math.max(1e-9, ...steps.map((s) => s.ms));
  const slot = width / Math.max(1, steps.length);
  const nodes = steps.map((s, i) => {
    const h = ((height - top - bottom) * s.ms) / most;
    const group = svgNode("g", { class: "step", "data-step": s.step });
    const bar = svgNode("rect", {
      x: i * slot + slot * 0.15, y: height - bottom - h, width: slot * 0.7, height: Math.max(h, 0.5),
    });
    bar.append(svgNode("title", {},
      `step ${s.step}: ${s.ms.toFixed(1)} ms, ${s.accepted} slots accepted, mean entropy ${s.mean_entropy.toFixed(3)}`));
    group.append(bar, svgNode("text", { x: i * slot + slot / 2, y: height - 4, "text-anchor": "middle" }, s.step));
    return group;
  });
  nodes.push(svgNode("text", { x: 2, y: 11 }, `${most.toFixed(1)} ms`));
  chart.replaceChildren(...nodes);
  const parts = ["queue_ms", "encoder_ms", "prefill_ms", "denoise_ms", "total_ms"]
    .filter((key) => timing[key] !== undefined)
    .map((key) => `${key.replace("_ms", "")} ${timing[key].toFixed(1)} ms`);
  $("timing-summary").textContent = `${steps.length} steps · ${parts.join(" · ")}`;
}
