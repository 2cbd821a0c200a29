"""What a transformers call carries, read the same way on every supported release.

transformers renames arguments between minor releases. From 5.24 the models' ``forward`` and
``generate`` take the KV cache as ``cache=``; earlier releases (and callers still using the deprecated
name on 5.24+) pass ``past_key_values=``. vtc reads the cache under whichever name the call used and
passes it on under the name the callee's signature declares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

CACHE_NAMES = ("cache", "past_key_values")  # newest first


def cache_name(fn: Callable) -> str:
    """The keyword under which ``fn`` takes the KV cache (``cache`` from transformers 5.24, else the old name)."""
    params = inspect.signature(fn).parameters
    return next((name for name in CACHE_NAMES if name in params), CACHE_NAMES[-1])


def cache_of(call: dict[str, Any]) -> Any | None:
    """The KV cache a call carries, under either name; None when it has none."""
    return next((call[name] for name in CACHE_NAMES if call.get(name) is not None), None)


def cached_length(call: dict[str, Any]) -> int:
    """How many tokens the call's KV cache already holds (0 without a cache)."""
    cache = cache_of(call)
    return 0 if cache is None else int(cache.get_seq_length())
