"""Built-in methods; importing this package registers them. One method per module."""

from vtc.methods import (  # noqa: F401
    cdpruner,
    cls_attention,
    dart,
    divprune,
    dycoke,
    fastv,
    fastvid,
    frames,
    hiprune,
    pool,
    prumerge,
    prumerge_plus,
    pyramiddrop,
    random,
    temporal_pool,
    tome,
    tome_encoder,
    uniform,
    vidcom2,
    visionzip,
)
