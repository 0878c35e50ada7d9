"""Mesh adjacency and graph Laplacians (paper Sec. 4.2, Defferrard et al. 2016).

Shape shorthand: V mesh vertices, F triangles, N graph nodes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

# Up to this many nodes lambda_max comes from a dense eigensolver; above it from ARPACK.
_DENSE_EIGEN_MAX_NODES = 128


def adjacency_from_faces(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """Binary, symmetric vertex adjacency of a triangle mesh, without self loops.

    Vertices used by no face become isolated nodes; a face that repeats a vertex contributes
    only its edges between distinct vertices.

    Args:
      faces: F x 3 integer vertex indices in [0, num_vertices).
      num_vertices: V, the number of mesh vertices (> 0).

    Returns:
      V x V float64 csr_matrix W with w_ij = 1 if i and j share a face edge, else 0.

    Raises:
      ValueError: faces is not an F x 3 integer array, num_vertices is not positive, or an
        index is out of range.
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces has dtype {faces.dtype} and shape {faces.shape}; expected an F x 3 integer array")
    if isinstance(num_vertices, bool) or not isinstance(num_vertices, (int, np.integer)) or num_vertices < 1:
        raise ValueError(f"num_vertices is {num_vertices!r}; expected a positive integer")
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        bad = np.flatnonzero(np.any((faces < 0) | (faces >= num_vertices), axis=1))[0]
        raise ValueError(
            f"face {bad} is {faces[bad].tolist()}: vertex indices must lie in [0, {num_vertices}), "
            f"faces span [{faces.min()}, {faces.max()}]"
        )
    first = faces.reshape(-1)
    second = faces[:, [1, 2, 0]].reshape(-1)
    keep = first != second
    rows = np.concatenate([first[keep], second[keep]]).astype(np.int64)
    cols = np.concatenate([second[keep], first[keep]]).astype(np.int64)
    adjacency = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices))
    adjacency.data[:] = 1.0  # An edge shared by two faces was summed twice.
    adjacency.sort_indices()
    return adjacency


def _as_square_csr(matrix, name: str) -> scipy.sparse.csr_matrix:
    matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float64)
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} has shape {matrix.shape}; expected a non-empty N x N matrix")
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{name} contains NaN or inf")
    return matrix


def normalized_laplacian(adjacency) -> scipy.sparse.csr_matrix:
    """Symmetric normalised Laplacian L = I - D^-1/2 W D^-1/2, D = diag(sum_j w_ij).

    An isolated node (degree 0, e.g. a fake node of the coarsening) gets the identity row, so
    the result never holds NaN or inf.

    Args:
      adjacency: N x N symmetric, non-negative weights W (scipy sparse or dense).

    Returns:
      N x N float64 csr_matrix L, eigenvalues in [0, 2].

    Raises:
      ValueError: adjacency is not square, empty, non-finite, negative or asymmetric.
    """
    weights = _as_square_csr(adjacency, "adjacency")
    if weights.nnz and weights.data.min() < 0:
        raise ValueError(f"adjacency has a negative weight {weights.data.min()}; expected weights >= 0")
    asymmetry = abs(weights - weights.T)
    if asymmetry.nnz and asymmetry.max() > 1e-12 * max(1.0, abs(weights).max()):
        raise ValueError(f"adjacency is not symmetric: max |W - W^T| = {asymmetry.max():.3g}")
    degree = np.asarray(weights.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
    scaling = scipy.sparse.diags(inv_sqrt)
    identity = scipy.sparse.identity(len(degree), dtype=np.float64, format="csr")
    laplacian = scipy.sparse.csr_matrix(identity - scaling @ weights @ scaling)
    laplacian.eliminate_zeros()
    laplacian.sort_indices()
    return laplacian


def largest_eigenvalue(laplacian) -> float:
    """lambda_max of a symmetric matrix: dense for small N, deterministic ARPACK otherwise.

    Args:
      laplacian: N x N symmetric matrix (scipy sparse or dense).

    Returns:
      The largest (algebraic) eigenvalue as a float.
    """
    matrix = _as_square_csr(laplacian, "laplacian")
    size = matrix.shape[0]
    if size <= _DENSE_EIGEN_MAX_NODES:
        return float(np.linalg.eigvalsh(matrix.toarray())[-1])
    start = np.random.default_rng(0).standard_normal(size)  # Fixed start: reproducible result.
    value = scipy.sparse.linalg.eigsh(matrix, k=1, which="LA", v0=start, tol=0, return_eigenvectors=False)
    return float(value[0])


def rescale_laplacian(laplacian, lambda_max: float | None = None) -> scipy.sparse.csr_matrix:
    """Chebyshev-ready Laplacian L~ = 2 L / lambda_max - I, spectrum in [-1, 1].

    Args:
      laplacian: N x N symmetric positive semi-definite L (scipy sparse or dense).
      lambda_max: largest eigenvalue of L; computed when None. Must be positive.

    Returns:
      N x N float64 csr_matrix L~.

    Raises:
      ValueError: laplacian is not a non-empty square matrix, or lambda_max is not positive.
    """
    matrix = _as_square_csr(laplacian, "laplacian")
    if lambda_max is None:
        lambda_max = largest_eigenvalue(matrix)
    if not np.isfinite(lambda_max) or lambda_max <= 0:
        raise ValueError(f"lambda_max is {lambda_max}; expected a finite value > 0")
    identity = scipy.sparse.identity(matrix.shape[0], dtype=np.float64, format="csr")
    rescaled = scipy.sparse.csr_matrix((2.0 / lambda_max) * matrix - identity)
    rescaled.eliminate_zeros()
    rescaled.sort_indices()
    return rescaled
