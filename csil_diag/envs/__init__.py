"""robosuite tasks behind a small, stable interface."""

from csil_diag.envs.tasks import CAMERAS, TASKS, RobosuiteTask, make_env

__all__ = ["CAMERAS", "TASKS", "RobosuiteTask", "make_env"]
