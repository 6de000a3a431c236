"""Three-piece assembly (the thesis' fourth task, after mimicgen's ThreePieceAssembly), built on robosuite.

A square ring (the base) is fixed at the table's centre. Piece 1 is a square plate with a ridge on top; it fits
into the base's hole (6 mm clearance per side, so its yaw must match the hole's modulo 90° within ~7°). Piece 2
has two legs with a slot between them and a knob on its roof; it goes over piece 1 with the ridge in the slot
(3 mm per side: yaw modulo 180° within ~3°), its legs resting on the base's rim. Both free pieces start at random
places and yaws on the table. Success: piece 1 seated in the base, then piece 2 seated on it, neither held.

Importing this module registers the env with robosuite (its metaclass) under :data:`ENV_NAME`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from csil_diag.envs.suite import import_robosuite

ENV_NAME = "CsilThreePieceAssembly"

# Geometry (metres). Heights are full heights; the body origin of each piece is the centre of its bounding box.
BASE_OUTER = 0.19  # square ring: outer side
BASE_HOLE = 0.114  # inner side (the ring has no floor: piece 1 stands on the table)
BASE_HEIGHT = 0.038
PIECE1_SIDE = 0.102  # plate side
PIECE1_PLATE = 0.034  # plate thickness (4 mm below the base's rim when seated)
RIDGE_WIDTH = 0.034  # along piece 1's local x; the ridge runs along local y over the whole plate
RIDGE_HEIGHT = 0.068
PIECE1_HEIGHT = PIECE1_PLATE + RIDGE_HEIGHT
PIECE2_SIDE = 0.12
LEG_WIDTH = 0.04  # along piece 2's local x; two legs at ±(slot + leg)/2 leave a slot along local y
SLOT_WIDTH = 0.04
LEG_HEIGHT = 0.08
ROOF_HEIGHT = 0.04
KNOB = 0.04  # cube on the roof's centre: what the gripper holds
PIECE2_HEIGHT = LEG_HEIGHT + ROOF_HEIGHT + KNOB

SEATED_XY = 0.01  # a seated piece's centre is within this of the one below, horizontally
SEATED_Z = 0.006  # and its bottom within this of where it rests when fully down


def _build_env_class() -> type:
    from robosuite.environments.manipulation.manipulation_env import ManipulationEnv
    from robosuite.models.arenas import TableArena
    from robosuite.models.objects import CompositeObject
    from robosuite.models.tasks import ManipulationTask
    from robosuite.utils.mjcf_utils import CustomMaterial, array_to_string
    from robosuite.utils.observables import Observable, sensor
    from robosuite.utils.placement_samplers import UniformRandomSampler
    from robosuite.utils.transform_utils import convert_quat

    def material(texture: str, name: str) -> Any:
        return CustomMaterial(
            texture=texture,
            tex_name=name,
            mat_name=f"{name}_mat",
            tex_attrib={"type": "cube"},
            mat_attrib={"texrepeat": "1 1", "specular": "0.4", "shininess": "0.1"},
        )

    def boxes(name: str, size: tuple[float, float, float], parts, mat, joints: Any = "default", density=100.0):
        """A rigid object of boxes: parts = [(centre (x, y, z) from the bbox centre, full size (x, y, z))]."""
        return CompositeObject(
            name=name,
            total_size=np.asarray(size) / 2,
            geom_types=["box"] * len(parts),
            geom_sizes=[np.asarray(s) / 2 for _, s in parts],
            geom_locations=[c for c, _ in parts],
            geom_names=[f"part{i}" for i in range(len(parts))],
            geom_materials=[mat.mat_attrib["name"]] * len(parts),
            geom_rgbas=[None] * len(parts),
            locations_relative_to_center=True,
            joints=joints,
            density=density,
        )

    def base_object(mat) -> Any:
        wall = (BASE_OUTER - BASE_HOLE) / 2
        off = (BASE_OUTER - wall) / 2
        parts = [
            ((0.0, off, 0.0), (BASE_OUTER, wall, BASE_HEIGHT)),
            ((0.0, -off, 0.0), (BASE_OUTER, wall, BASE_HEIGHT)),
            ((off, 0.0, 0.0), (wall, BASE_HOLE, BASE_HEIGHT)),
            ((-off, 0.0, 0.0), (wall, BASE_HOLE, BASE_HEIGHT)),
        ]
        obj = boxes("base", (BASE_OUTER, BASE_OUTER, BASE_HEIGHT), parts, mat, joints=None)
        obj.append_material(mat)
        return obj

    def piece1_object(mat) -> Any:
        bottom = -PIECE1_HEIGHT / 2
        parts = [
            ((0.0, 0.0, bottom + PIECE1_PLATE / 2), (PIECE1_SIDE, PIECE1_SIDE, PIECE1_PLATE)),
            ((0.0, 0.0, bottom + PIECE1_PLATE + RIDGE_HEIGHT / 2), (RIDGE_WIDTH, PIECE1_SIDE, RIDGE_HEIGHT)),
        ]
        obj = boxes("piece_1", (PIECE1_SIDE, PIECE1_SIDE, PIECE1_HEIGHT), parts, mat)
        obj.append_material(mat)
        return obj

    def piece2_object(mat) -> Any:
        bottom = -PIECE2_HEIGHT / 2
        leg_x = (SLOT_WIDTH + LEG_WIDTH) / 2
        leg = (LEG_WIDTH, PIECE2_SIDE, LEG_HEIGHT)
        parts = [
            ((leg_x, 0.0, bottom + LEG_HEIGHT / 2), leg),
            ((-leg_x, 0.0, bottom + LEG_HEIGHT / 2), leg),
            ((0.0, 0.0, bottom + LEG_HEIGHT + ROOF_HEIGHT / 2), (PIECE2_SIDE, PIECE2_SIDE, ROOF_HEIGHT)),
            ((0.0, 0.0, bottom + LEG_HEIGHT + ROOF_HEIGHT + KNOB / 2), (KNOB, KNOB, KNOB)),
        ]
        obj = boxes("piece_2", (PIECE2_SIDE, PIECE2_SIDE, PIECE2_HEIGHT), parts, mat)
        obj.append_material(mat)
        return obj

    class CsilThreePieceAssembly(ManipulationEnv):
        """Panda, table 0.8 × 0.8 at z 0.8; the base at the table's centre; the pieces around it, clear of it and
        of each other (x towards the robot: the far corners are at the edge of the arm's reach)."""

        def __init__(
            self,
            robots,
            table_full_size=(0.8, 0.8, 0.05),
            table_friction=(1.0, 5e-3, 1e-4),
            use_object_obs=True,
            reward_scale=1.0,
            reward_shaping=False,
            x_range=(-0.22, 0.2),
            y_range=(-0.26, 0.26),
            yaw_range=(-np.pi / 2, np.pi / 2),
            **kwargs,
        ) -> None:
            self.table_full_size = table_full_size
            self.table_friction = table_friction
            self.table_offset = np.array((0.0, 0.0, 0.8))
            self.reward_scale = reward_scale
            self.reward_shaping = reward_shaping
            self.use_object_obs = use_object_obs
            self.x_range, self.y_range = tuple(x_range), tuple(y_range)
            self.yaw_range = tuple(yaw_range)
            super().__init__(robots=robots, **kwargs)

        # ------------------------------------------------------------------ model
        def _load_model(self) -> None:
            super()._load_model()
            robot = self.robots[0]
            robot.robot_model.set_base_xpos(robot.robot_model.base_xpos_offset["table"](self.table_full_size[0]))
            arena = TableArena(
                table_full_size=self.table_full_size,
                table_friction=self.table_friction,
                table_offset=self.table_offset,
            )
            arena.set_origin([0, 0, 0])
            self.base = base_object(material("WoodLight", "base_wood"))
            self.piece_1 = piece1_object(material("WoodRed", "piece1_wood"))
            self.piece_2 = piece2_object(material("WoodBlue", "piece2_wood"))
            # The base has no joint: it is welded to the world where its body says.
            base_pos = self.table_offset + np.array([0.0, 0.0, BASE_HEIGHT / 2])
            self.base.get_obj().set("pos", array_to_string(base_pos))
            self.placement_initializer = UniformRandomSampler(
                name="PieceSampler",
                mujoco_objects=[self.piece_1, self.piece_2],
                x_range=self.x_range,
                y_range=self.y_range,
                rotation=self.yaw_range,
                rotation_axis="z",
                ensure_object_boundary_in_range=False,
                ensure_valid_placement=True,
                reference_pos=self.table_offset,
                z_offset=0.001,
                rng=self.rng,
            )
            self.model = ManipulationTask(
                mujoco_arena=arena,
                mujoco_robots=[r.robot_model for r in self.robots],
                mujoco_objects=[self.base, self.piece_1, self.piece_2],
            )

        def _setup_references(self) -> None:
            super()._setup_references()
            self.base_body_id = self.sim.model.body_name2id(self.base.root_body)
            self.piece_1_body_id = self.sim.model.body_name2id(self.piece_1.root_body)
            self.piece_2_body_id = self.sim.model.body_name2id(self.piece_2.root_body)

        def _reset_internal(self) -> None:
            super()._reset_internal()
            if not self.deterministic_reset:
                # The base is a fixture the free pieces must not be placed on.
                base_pos = tuple(self.sim.data.body_xpos[self.base_body_id])
                placed = self.placement_initializer.sample(fixtures={"base": (base_pos, (1.0, 0, 0, 0), self.base)})
                for name, (pos, quat, obj) in placed.items():
                    if name != "base":
                        self.sim.data.set_joint_qpos(obj.joints[0], np.concatenate([np.array(pos), np.array(quat)]))

        # ------------------------------------------------------------------ observations
        def _setup_observables(self):
            observables = super()._setup_observables()
            if not self.use_object_obs:
                return observables
            # Per object: position, quaternion (x, y, z, w), offset from the gripper: 3 × 10. Not the quaternion
            # relative to the gripper (mimicgen has it): with the gripper pointing down it is a rotation by ~π,
            # whose quaternion flips sign between nearly equal states.
            eef_site = self.robots[0].eef_site_id["right"]
            sensors = []
            for name in ("base", "piece_1", "piece_2"):
                # Body ids are looked up at call time: a hard reset rebuilds the sim and its ids.
                def pos_fn(obs_cache, n=name):
                    return np.array(self.sim.data.body_xpos[getattr(self, f"{n}_body_id")])

                def quat_fn(obs_cache, n=name):
                    return convert_quat(np.array(self.sim.data.body_xquat[getattr(self, f"{n}_body_id")]), to="xyzw")

                def rel_pos_fn(obs_cache, n=name):
                    return pos_fn(obs_cache, n) - np.array(self.sim.data.site_xpos[eef_site])

                for suffix, fn in (
                    ("pos", pos_fn),
                    ("quat", quat_fn),
                    ("to_robot0_eef_pos", rel_pos_fn),
                ):
                    fn.__name__ = f"{name}_{suffix}"
                    sensors.append(sensor(modality="object")(fn))
            for s in sensors:
                observables[s.__name__] = Observable(name=s.__name__, sensor=s, sampling_rate=self.control_freq)
            return observables

        # ------------------------------------------------------------------ task
        def piece_bottom(self, piece: int) -> float:
            body = self.piece_1_body_id if piece == 1 else self.piece_2_body_id
            height = PIECE1_HEIGHT if piece == 1 else PIECE2_HEIGHT
            return float(self.sim.data.body_xpos[body][2] - height / 2)

        def piece_1_seated(self) -> bool:
            """Piece 1 down in the base's hole (centred, standing on the table) and not held."""
            xy = self.sim.data.body_xpos[self.piece_1_body_id][:2] - self.sim.data.body_xpos[self.base_body_id][:2]
            down = self.piece_bottom(1) < self.table_offset[2] + SEATED_Z
            return bool(np.linalg.norm(xy) < SEATED_XY and down and not self._held(self.piece_1))

        def piece_2_seated(self) -> bool:
            """Piece 2 over piece 1 with the ridge in its slot (only then its legs reach the rim) and not held."""
            xy = self.sim.data.body_xpos[self.piece_2_body_id][:2] - self.sim.data.body_xpos[self.piece_1_body_id][:2]
            down = self.piece_bottom(2) < self.table_offset[2] + BASE_HEIGHT + SEATED_Z
            return bool(np.linalg.norm(xy) < SEATED_XY and down and not self._held(self.piece_2))

        def _held(self, obj) -> bool:
            return bool(self._check_grasp(gripper=self.robots[0].gripper, object_geoms=obj))

        def _check_success(self) -> bool:
            return self.piece_1_seated() and self.piece_2_seated()

        def reward(self, action=None) -> float:
            if self.reward_shaping:  # a stage count: 0.5 per seated piece
                value = 0.5 * (self.piece_1_seated() + (self.piece_1_seated() and self.piece_2_seated()))
            else:
                value = float(self._check_success())
            return value * self.reward_scale

    return CsilThreePieceAssembly


_ENV_CLASS: type | None = None


def register() -> type:
    """Define (once) and register the env class with robosuite; returns it."""
    global _ENV_CLASS
    if _ENV_CLASS is None:
        import_robosuite()  # robosuite's import-time settings first
        _ENV_CLASS = _build_env_class()
    return _ENV_CLASS
