"""Selection kernels with torch references and Triton versions; see ``dispatch`` for the backend rule.

from vtc.kernels import similarity_topk, maxmin_select, dpp_select, set_backend
"""

from vtc.kernels.dispatch import get_backend, set_backend
from vtc.kernels.dpp import dpp_select
from vtc.kernels.maxmin import maxmin_select
from vtc.kernels.similarity import similarity_topk

__all__ = ["dpp_select", "get_backend", "maxmin_select", "set_backend", "similarity_topk"]
