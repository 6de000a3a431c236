"""π0 in flax linen, parameter-compatible with openpi checkpoints, with embedding extraction.

config      frozen configs and presets (pi0_base, pi0_lora, pi0_tiny), fixture specs
gemma       the two-expert Gemma transformer (shared attention, scanned layers, KV cache)
siglip      the SigLIP vision tower
lora        LoRA layout and openpi's freeze rule
pi0         the model, flow-matching loss, Euler sampling + embedding sites in one jitted call
tokenizer   π0 prompt format: built-in byte tokenizer, or PaliGemma's sentencepiece model
checkpoint  openpi-layout checkpoints (orbax params, norm stats) — read and write
fixture     golden-fixture check against outputs of the real openpi code
adapter     robosuite observations → π0 inputs (cameras, state, prompt)
dataset     demos as π0 training batches; train / regimes: pre-training and the fine-tuning regimes
policy      a checkpoint acting in envs (batched, chunked), its embeddings; embed: the demos' cached outputs
evaluate    π0 acting alone; diff: what fine-tuning changed; bench: throughput; default: the embedded tiny π0
(its command line is csil_diag/cli/vla.py)
"""
