"""``vtc eval``: batch image/video-QA evaluation of compression methods, one model load per grid.

Modules, one concern each:

- :mod:`vtc.eval.data`: annotation formats (vtc JSONL and the lmms-eval video multiple-choice sets),
  media paths and loading, the built-in synthetic benchmark.
- :mod:`vtc.eval.answers`: answer-letter extraction and short-answer matching (the rules).
- :mod:`vtc.eval.grid`: the method grid (``none`` and the iso-token ``pool`` baseline always in it).
- :mod:`vtc.eval.store`: ``samples.jsonl``: fsync'd appends, truncated-tail repair, shards and merge.
- :mod:`vtc.eval.dist`: data parallelism under ``torchrun`` / ``accelerate launch``.
- :mod:`vtc.eval.runner`: prompts, batches, timings and one line per (sample, method).
- :mod:`vtc.eval.metrics`: accuracy, bootstrap CI, % of ``none``, the difficult split.
- :mod:`vtc.eval.report`: ``results.json``, ``summary.md``/``.csv`` and the plots.
- :mod:`vtc.eval.cli`: the command line.

Nothing heavy (torch, transformers, matplotlib) is imported here.
"""
