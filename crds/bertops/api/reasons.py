"""Condition reasons that every kind with a step can give, defined once: each kind module
(:mod:`bertops.api.dataset`, :mod:`~bertops.api.training`, :mod:`~bertops.api.model`)
names them among its own reasons, and code that refuses or fails an object of any kind
(the planners' checks, the trainer's exit reasons) uses these.

The Argo CD health check (gitops/argocd/health) is tested against every reason a planner
can write, these included.
"""

from __future__ import annotations

REASON_STEP_FAILED = "StepFailed"  # the step crashed: a bug, logs say where
REASON_INVALID_SPEC = "InvalidSpec"  # refused before any step started
REASON_UNSUPPORTED_TASK = "UnsupportedTask"  # a task this version does not implement
REASON_DATASET_NOT_FOUND = "DatasetNotFound"  # the referenced BertDataset does not exist
