"""Knowledge distillation: cut a student from the teacher (a subset of its layers, every
weight initialised from the teacher) and train it on the teacher's softened logits plus
the hard labels.

Called by :mod:`bertops.trainer.compress.methods`; the training loop itself is
:func:`bertops.trainer.compress.finetune.train`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

from bertops.trainer.evaluate import collate

_LAYER_KEY = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")


def student_layer_ids(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, always including the top one: 6 -> 3 keeps 1, 3, 5
    ("every other layer"). The top layer feeds the pooler and classifier the teacher was
    fine-tuned with, so keeping it preserves the most of the head's input distribution."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def make_student(teacher: Any, student_layers: int) -> Any:
    """A smaller model of the teacher's class with ``student_layers`` encoder layers,
    embeddings, pooler and classifier copied from the teacher."""
    keep = student_layer_ids(teacher.config.num_hidden_layers, student_layers)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = student_layers
    student = type(teacher)(config)
    renumber = {teacher_id: student_id for student_id, teacher_id in enumerate(keep)}
    state: dict[str, torch.Tensor] = {}
    for key, value in teacher.state_dict().items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = value.clone()
            continue
        teacher_id = int(match.group(2))
        if teacher_id in renumber:
            new = f"{match.group(1)}encoder.layer.{renumber[teacher_id]}."
            state[key[: match.start()] + new + key[match.end() :]] = value.clone()
    student.load_state_dict(state, strict=True)
    student.eval()
    return student


@torch.no_grad()
def teacher_logits(
    teacher: Any, ids: list[list[int]], pad_id: int, batch_size: int = 64
) -> torch.Tensor:
    """The teacher's logits for every training row, computed once (not per epoch)."""
    teacher.eval()
    out = torch.empty(len(ids), teacher.config.num_labels)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([ids[i] for i in chunk], pad_id, torch.device("cpu"))
        out[chunk] = teacher(**batch).logits.float()
    return out
