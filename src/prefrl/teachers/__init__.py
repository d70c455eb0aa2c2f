"""prefrl.teachers: who answers comparisons (synthetic from the true reward, people, AI judges)."""

from prefrl.teachers.base import Teacher
from prefrl.teachers.synthetic import TEACHER_PRESETS, SyntheticTeacher, make_teacher

__all__ = ["Teacher", "SyntheticTeacher", "TEACHER_PRESETS", "make_teacher"]
