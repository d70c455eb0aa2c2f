"""prefrl.teachers: who answers comparisons (synthetic from the true reward, people, AI judges)."""

from prefrl.teachers.base import Pair, Teacher
from prefrl.teachers.factory import build_teacher
from prefrl.teachers.queue import answer_queries
from prefrl.teachers.synthetic import TEACHER_PRESETS, SyntheticTeacher, make_teacher

__all__ = ["Teacher", "Pair", "answer_queries", "build_teacher", "SyntheticTeacher", "TEACHER_PRESETS", "make_teacher"]
