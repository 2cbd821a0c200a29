"""The embedded tiny VLMs: ``vtc-tiny-llava`` and ``vtc-tiny-qwen2vl``, their processor and their training.

- :mod:`vtc.tiny.model`: the word-level tokenizer, configs, ``TinyProcessor`` and ``new_model`` (stock
  transformers classes; imports only :mod:`vtc.data`), which :func:`vtc.models.load` uses to load them.
- :mod:`vtc.tiny.train`: ``vtc train-tiny`` (dense pre-training of the tower, then QA), which uses the
  adapters (:mod:`vtc.models`) and the answer scoring (:mod:`vtc.eval.answers`): it sits beside ``vtc.eval``.
- ``weights/``: the shipped safetensors, configs, tokenizers and training histories.
"""
