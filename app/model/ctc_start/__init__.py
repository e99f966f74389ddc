"""The embedded demo model's optional CTC-start add-on: CTC compression of the prompt's audio, a canvas that
starts from the CTC head's reading (optionally searched against word lists), the language read before denoising.

On only for checkpoints whose `asr_config.json` has a `ctc_start` section; nothing on the real model's path
imports this package.
"""
