"""``vtc demo``: a Gradio page comparing compressors side by side (:mod:`vtc.demo.app`, :mod:`vtc.demo.cli`).

Nothing here imports Gradio at import time; it is an optional dependency: ``pip install 'vtc[demo]'``.
"""
