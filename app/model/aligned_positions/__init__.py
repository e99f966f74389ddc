"""The embedded demo's aligned rotary positions: the prompt's audio slots sit at the canvas positions of the
tokens they speak, as counted by the projector's own greedy CTC. Switched on by the checkpoint's
`aligned_positions` section; the real model's prompt keeps its plain positions."""
