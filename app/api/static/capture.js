// Microphone capture: mono Float32 blocks at the audio context's own rate, and a WAV encoder for recordings.

export class Microphone {
  constructor(onSamples) {
    this.onSamples = onSamples;
  }

  // Ask for the microphone and start handing blocks to onSamples; resolves with the sample rate.
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/static/capture-worklet.js");
    const source = this.context.createMediaStreamSource(this.stream);
    // channelCount 1 + explicit: the browser downmixes a stereo device before the worklet sees it.
    const node = new AudioWorkletNode(this.context, "capture", {
      numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit",
    });
    node.port.onmessage = (event) => this.onSamples(event.data);
    this.node = node;
    // A silent path to the destination keeps the graph pulled (nothing is played back).
    const mute = this.context.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(this.context.destination);
    this.sampleRate = this.context.sampleRate;
    return this.sampleRate;
  }

  // Release the device; safe to call again while a first call is still closing the context.
  async stop() {
    const { stream, context, node } = this;
    this.stream = this.context = this.node = undefined;
    // No block reaches onSamples after stop() begins (blocks already posted would otherwise still arrive).
    if (node) node.port.onmessage = null;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    if (context) await context.close();
  }
}

// Joins Float32 blocks into one array.
export function concatBlocks(blocks) {
  const total = blocks.reduce((n, block) => n + block.length, 0);
  const out = new Float32Array(total);
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}

// A 16-bit PCM mono WAV file of `samples` (floats in -1..1).
export function encodeWav(samples, sampleRate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}
