"""Shared model zoo: CLIP vision transformer and BERT in Flax, with Hugging Face import and export.

Modules: `clip` (CLIPVisionModel and its configs), `bert` (BertModel and
MINILM_L6), `hf` (parameter naming, `load_hf`, `save_hf`,
`load_clip_vision`), `params` (`overlay_params` for extended models) and
`minilm` (the packaged all-MiniLM-L6-v2 sentence encoder). See docs/models.md.
"""
