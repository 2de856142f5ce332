"""Tensor functions, by family: arithmetic and comparison operators, joining and splitting,
reshaping, reductions, indexing, and the small helpers of the language (positions, noise,
reparameterize, detach, zeros/ones), selection, casts, logic and einsum. Also the Flatten and Unflatten layers. Importing this
package registers them, in this order."""
from . import arith, joining, reshape, reductions, indexing, helpers, selection, cast, logic, einsum  # noqa: F401, I001 (registration order)
