"""Graclus multilevel coarsening and the binary tree of nodes (Defferrard et al. 2016).

Each level greedily pairs every node with the unmatched neighbour that maximises the
normalised-cut gain w_ij (1 / d_i + 1 / d_j) (Dhillon et al., Graclus), visiting nodes in a
seeded random order; d is the node's volume (sum of the degrees of the mesh vertices it holds).
Unmatched nodes stay alone. The levels then become a binary tree: fake, disconnected nodes are
added so every coarse node has exactly two children, and every level is permuted so that the
children of coarse node i are fine nodes 2i and 2i + 1. Upsampling is then the gather
`child i <- parent i // 2` and pooling a reshape into pairs.

Shape shorthand: N_l nodes of level l before the permutation, P_l = N_L 2^(L - l) nodes of
level l after it (real and fake), L the number of coarsening levels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def graclus_matching(adjacency, volumes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """One Graclus level: greedy normalised-cut matching in the given visiting order.

    A visited, still unmatched node takes its unmatched neighbour with the largest
    w_ij (1 / d_i + 1 / d_j) (the lowest index among ties) or, with none left, stays alone.
    Clusters are numbered in the order they are formed.

    Args:
      adjacency: N x N symmetric non-negative weights without self loops (scipy sparse).
      volumes: N positive node volumes d.
      order: N, a permutation of range(N): the visiting order.

    Returns:
      N int64 cluster index of every node, in [0, M), M the number of clusters.

    Raises:
      ValueError: volumes or order do not fit the adjacency.
    """
    weights = scipy.sparse.csr_matrix(adjacency, dtype=np.float64)
    weights.sort_indices()
    size = weights.shape[0]
    volumes = np.asarray(volumes, np.float64)
    order = np.asarray(order)
    if volumes.shape != (size,) or not np.all(volumes > 0):
        raise ValueError(f"volumes has shape {volumes.shape}; expected {(size,)} positive values")
    if order.shape != (size,) or not np.array_equal(np.sort(order), np.arange(size)):
        raise ValueError(f"order has shape {order.shape}; expected a permutation of range({size})")
    inverse_volume = (1.0 / volumes).tolist()
    indptr, indices, data = weights.indptr.tolist(), weights.indices.tolist(), weights.data.tolist()
    cluster = [-1] * size
    count = 0
    for node in order.tolist():
        if cluster[node] >= 0:
            continue
        cluster[node] = count
        best, best_gain = -1, 0.0
        for k in range(indptr[node], indptr[node + 1]):
            neighbour = indices[k]
            if cluster[neighbour] < 0:
                gain = data[k] * (inverse_volume[node] + inverse_volume[neighbour])
                if gain > best_gain:
                    best, best_gain = neighbour, gain
        if best >= 0:
            cluster[best] = count
        count += 1
    return np.asarray(cluster, np.int64)


def _pool(adjacency: scipy.sparse.csr_matrix, cluster: np.ndarray) -> scipy.sparse.csr_matrix:
    """M x M coarse weights: summed fine weights between clusters, self loops dropped."""
    size = len(cluster)
    assignment = scipy.sparse.csr_matrix(
        (np.ones(size), (np.arange(size), cluster)), shape=(size, int(cluster.max()) + 1)
    )
    coarse = scipy.sparse.csr_matrix(assignment.T @ adjacency @ assignment)
    coarse.setdiag(0.0)
    coarse.eliminate_zeros()
    coarse.sort_indices()
    return coarse


def graclus_levels(adjacency, levels: int, seed: int = 0) -> tuple[list[scipy.sparse.csr_matrix], list[np.ndarray]]:
    """Coarsens a graph `levels` times by Graclus matching (seeded, deterministic).

    Args:
      adjacency: N_0 x N_0 symmetric non-negative weights without self loops.
      levels: L >= 1, the number of coarsening steps.
      seed: seed of the visiting orders.

    Returns:
      graphs: L + 1 csr weight matrices N_l x N_l, finest first, in cluster order; a coarse
        weight is the sum of the fine weights between the two clusters.
      parents: L int64 arrays; parents[l] (N_l) is the level-(l + 1) cluster of each node.

    Raises:
      ValueError: levels < 1, or the adjacency is not square, empty or has self loops.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels is {levels!r}; expected an integer >= 1")
    graph = scipy.sparse.csr_matrix(adjacency, dtype=np.float64)
    if graph.shape[0] != graph.shape[1] or graph.shape[0] == 0:
        raise ValueError(f"adjacency has shape {graph.shape}; expected a non-empty N x N matrix")
    if graph.diagonal().any():
        raise ValueError("adjacency has self loops; expected a zero diagonal")
    rng = np.random.default_rng(seed)
    # Isolated nodes have volume 0 but no neighbour to be matched with: any positive value works.
    volumes = np.asarray(graph.sum(axis=1)).ravel()
    volumes[volumes == 0] = 1.0
    graphs, parents = [graph], []
    for _ in range(levels):
        cluster = graclus_matching(graph, volumes, rng.permutation(graph.shape[0]))
        volumes = np.bincount(cluster, weights=volumes)
        graph = _pool(graph, cluster)
        graphs.append(graph)
        parents.append(cluster)
    return graphs, parents


def tree_permutations(parents: list[np.ndarray]) -> list[np.ndarray]:
    """Node order of every level that makes the coarsening a complete binary tree.

    The coarsest level keeps its order. Going finer, the slots of coarse position i are fine
    positions 2i and 2i + 1, filled with the node's children in increasing index order; a
    missing child (single-node cluster, or any child of a fake node) becomes a new fake node,
    numbered N_l, N_l + 1, ... in order of appearance.

    Args:
      parents: L int64 arrays from `graclus_levels`, parents[l] of length N_l.

    Returns:
      L + 1 int64 arrays, finest first; permutations[l] (P_l) holds, for each new position,
      the original node index, or an index >= N_l for a fake node.
    """
    coarsest = int(parents[-1].max()) + 1
    permutations = [np.arange(coarsest, dtype=np.int64)]
    for cluster in reversed(parents):
        children = [[] for _ in range(int(cluster.max()) + 1)]
        for node, parent in enumerate(cluster.tolist()):
            children[parent].append(node)
        next_fake = len(cluster)
        order = []
        for parent in permutations[0].tolist():
            slot = children[parent] if parent < len(children) else []
            if len(slot) > 2:
                raise ValueError(f"cluster {parent} has {len(slot)} children; expected at most 2")
            order.extend(slot)
            for _ in range(2 - len(slot)):
                order.append(next_fake)
                next_fake += 1
        permutations.insert(0, np.asarray(order, np.int64))
    return permutations


def permute_adjacency(adjacency, permutation: np.ndarray) -> scipy.sparse.csr_matrix:
    """Reorders a graph and pads it with fake, disconnected nodes.

    Args:
      adjacency: N x N weights.
      permutation: P >= N int64; permutation[p] is the node at new position p, >= N for fake.

    Returns:
      P x P csr_matrix A' with A'[p, q] = A[permutation[p], permutation[q]] for real nodes
      and empty rows and columns for fake nodes.
    """
    graph = scipy.sparse.coo_matrix(adjacency, dtype=np.float64)
    size = len(permutation)
    position = np.empty(size, np.int64)
    position[permutation] = np.arange(size)
    permuted = scipy.sparse.csr_matrix((graph.data, (position[graph.row], position[graph.col])), shape=(size, size))
    permuted.sort_indices()
    return permuted


def coarsen(adjacency, levels: int, seed: int = 0) -> tuple[list[scipy.sparse.csr_matrix], list[np.ndarray]]:
    """Graclus coarsening arranged as a binary tree (see module docstring).

    Args:
      adjacency: N_0 x N_0 symmetric non-negative weights without self loops.
      levels: L >= 1 coarsening steps.
      seed: seed of the Graclus visiting orders.

    Returns:
      adjacencies: L + 1 csr matrices P_l x P_l, finest first, in tree order; P_l = 2 P_(l+1),
        fake nodes have no edges, and coarse node i joins fine nodes 2i and 2i + 1.
      permutations: L + 1 int64 arrays P_l from `tree_permutations`.
    """
    graphs, parents = graclus_levels(adjacency, levels, seed)
    permutations = tree_permutations(parents)
    adjacencies = [permute_adjacency(graph, perm) for graph, perm in zip(graphs, permutations)]
    return adjacencies, permutations
