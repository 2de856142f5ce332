"""Tensor functions, by family: arithmetic and comparison operators, joining and splitting,
reshaping, reductions, indexing, the small helpers of the language (positions, reparameterize,
detach, zeros/ones/full), selection, casts, logic, einsum, creation (random tensors, noise,
ranges) and diffusion's noise schedules. Also the Flatten and Unflatten layers. Importing this
package registers them, in this order."""
from . import arith, joining, reshape, reductions, indexing, helpers, selection, cast, logic, einsum, creation, diffusion  # noqa: F401, I001 (registration order)
