"""Training losses of the paper (Sec. 4.3 fully supervised, Sec. 4.4 weakly supervised).

Shape shorthand: B batch, V mesh vertices, F triangles, E edges, J joints (21),
H x W heat-map pixels.

Modules, one per family: `heatmap` (L_H), `mesh` (vertex, normal, edge, Laplacian, L_M and the
pseudo-GT mesh loss L_pM), `pose` (L_J), `depth` (smooth-L1 depth map loss L_D), `combined`
(L_fully, L_weakly) and `topology` (MeshTopology: faces, edges and neighbour tables, built once
per mesh with `MeshTopology.from_faces`).

Conventions: every loss is a plain function of float32 tensors (numpy accepted), usable inside
tf.function, returning a scalar. Predictions and targets are in the network's uvd coordinates.
Reduction: within an item (vertex, joint, edge, face, heat-map, depth pixel) the paper's
summand is summed over coordinates (over pixels for a heat-map, over the 3 sides for a face);
items and the batch are averaged. The paper writes plain sums over items, so each of our
terms is the paper's divided by its item count (J, V, F, E, or the valid depth pixels), which
keeps values independent of mesh resolution but changes the balance between terms under the
paper's weights (e.g. L_H / J against L_v / V). Each module's docstring states its factor.
"""

from handshape_tf.losses.combined import (
    FULLY_SUPERVISED_TERMS,
    FULLY_SUPERVISED_WEIGHTS,
    WEAKLY_SUPERVISED_TERMS,
    WEAKLY_SUPERVISED_WEIGHTS,
    fully_supervised_loss,
    weakly_supervised_loss,
)
from handshape_tf.losses.depth import depth_map_loss, smooth_l1
from handshape_tf.losses.heatmap import heatmap_loss
from handshape_tf.losses.mesh import (
    MESH_LOSS_WEIGHTS,
    MESH_TERMS,
    edge_loss,
    face_normals,
    laplacian_loss,
    mesh_loss,
    normal_loss,
    pseudo_gt_mesh_loss,
    vertex_loss,
)
from handshape_tf.losses.pose import pose_loss
from handshape_tf.losses.topology import MeshTopology

__all__ = [
    "FULLY_SUPERVISED_TERMS",
    "FULLY_SUPERVISED_WEIGHTS",
    "MESH_LOSS_WEIGHTS",
    "MESH_TERMS",
    "MeshTopology",
    "WEAKLY_SUPERVISED_TERMS",
    "WEAKLY_SUPERVISED_WEIGHTS",
    "depth_map_loss",
    "edge_loss",
    "face_normals",
    "fully_supervised_loss",
    "heatmap_loss",
    "laplacian_loss",
    "mesh_loss",
    "normal_loss",
    "pose_loss",
    "pseudo_gt_mesh_loss",
    "smooth_l1",
    "vertex_loss",
    "weakly_supervised_loss",
]
