"""Built-in methods; importing this package registers them. One method per module."""

from vtc.methods import (  # noqa: F401
    cdpruner,
    cls_attention,
    dart,
    divprune,
    fastv,
    hiprune,
    pool,
    prumerge,
    prumerge_plus,
    pyramiddrop,
    random,
    tome,
    tome_encoder,
    uniform,
    visionzip,
)
