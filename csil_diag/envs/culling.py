"""View-frustum culling of mesh geoms for offscreen camera frames.

MuJoCo hands every visible-group geom to OpenGL, and a software renderer (Mesa on a CPU) transforms all
their vertices even when the mesh lies behind the camera: at 84×84, per-vertex work on the ~170k
triangles of a Panda scene is most of a frame. A mesh whose bounding sphere lies wholly outside the
camera's frustum adds no fragment to the image, so hiding it for that frame leaves every pixel as it
was (tested bit for bit) and skips its vertices. Only meshes are culled (planes have no bounding
sphere); cameras this module cannot model exactly (orthographic, intrinsics from a sensor size) are
rendered uncut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Spheres are widened by this factor (plus an absolute margin in metres) so rounding never hides a
# mesh that grazes the frustum.
_MARGIN_SCALE = 1.01
_MARGIN_ABS = 1e-3


def outside_frustum(
    centres: np.ndarray,
    radii: np.ndarray,
    cam_pos: np.ndarray,
    cam_mat: np.ndarray,
    tan_half_fovy: float,
    aspect: float,
    znear: float,
    zfar: float,
) -> np.ndarray:
    """Which spheres lie wholly outside a perspective frustum.

    centres: (N, 3) world positions; radii: (N,); cam_pos: (3,); cam_mat: (3, 3) camera-to-world
    rotation whose columns are MuJoCo's camera axes (x right, y up, looking along −z);
    aspect = width / height. Returns (N,) bool.
    """
    local = (centres - cam_pos) @ cam_mat  # (N, 3) in camera axes
    depth = -local[:, 2]
    r = radii * _MARGIN_SCALE + _MARGIN_ABS
    # Signed distance to the nearer plane of each side pair (positive outside); the planes pass through the eye.
    sides = [
        (np.abs(local[:, axis]) - tan * depth) / np.sqrt(1.0 + tan**2)
        for axis, tan in ((0, tan_half_fovy * aspect), (1, tan_half_fovy))
    ]
    return (sides[0] > r) | (sides[1] > r) | (depth + r < znear) | (depth - r > zfar)


class FrustumCuller:
    """Hides, per frame, the mesh geoms a fixed camera cannot see (by moving them to a hidden group).

    Wraps a robosuite render context's ``render``; the model's groups are restored right after the
    scene is built, so physics and other cameras never see the change.
    """

    def __init__(self, context: Any) -> None:
        import mujoco

        self.context = context
        model = context.model._model
        self.model = model
        shown = np.asarray(context.vopt.geomgroup, bool)
        hidden = np.flatnonzero(~shown)
        self.hidden_group = int(hidden[0]) if hidden.size else None
        group = np.clip(model.geom_group, 0, len(shown) - 1)
        self.meshes = np.flatnonzero(
            (model.geom_type == mujoco.mjtGeom.mjGEOM_MESH) & shown[group] & (model.geom_rbound > 0)
        )
        # Cameras whose frustum this module models exactly: perspective, field of view from fovy.
        self.exact = ~model.cam_orthographic.astype(bool) & ~np.any(model.cam_sensorsize > 0, axis=1)
        self.culled_last = 0  # meshes hidden in the last frame (a measure, for tests and benchmarks)
        self._render: Callable[..., None] = context.render
        context.render = self.render

    def render(self, width: int, height: int, camera_id: int | None = None, segmentation: bool = False) -> None:
        if self.hidden_group is None or camera_id is None or camera_id < 0 or not self.exact[camera_id]:
            self.culled_last = 0
            return self._render(width, height, camera_id=camera_id, segmentation=segmentation)
        m, d = self.model, self.context.data._data
        extent = m.stat.extent
        cull = self.meshes[
            outside_frustum(
                d.geom_xpos[self.meshes],
                m.geom_rbound[self.meshes],
                d.cam_xpos[camera_id],
                d.cam_xmat[camera_id].reshape(3, 3),
                float(np.tan(np.deg2rad(m.cam_fovy[camera_id]) / 2)),
                width / height,
                m.vis.map.znear * extent,
                m.vis.map.zfar * extent,
            )
        ]
        self.culled_last = int(cull.size)
        saved = m.geom_group[cull].copy()
        m.geom_group[cull] = self.hidden_group
        try:
            return self._render(width, height, camera_id=camera_id, segmentation=segmentation)
        finally:
            m.geom_group[cull] = saved
