"""diffusion-asr-server: speech to text through a diffusion language model."""

import os

# Model weights are only ever read from local directories; a hub lookup must fail at once, never hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
