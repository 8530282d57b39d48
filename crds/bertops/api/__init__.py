"""bertops.api: the typed contract shared by every bertops component.

pydantic v2 models for the spec and status of the four custom resources (group
``bertops.io``, version ``v1alpha1``), Kubernetes-style conditions with pure helpers,
and the step contracts (what a trainer/server step reads and writes). The CRD YAML in
``crds/`` is generated from these types by :mod:`bertops.api.crdgen`, so this package is
the single source of truth. Imports pydantic only, so the operator image stays small.
"""

from bertops.api.dataset import BertDataset, BertDatasetSpec, BertDatasetStatus
from bertops.api.deployment import BertDeployment, BertDeploymentSpec, BertDeploymentStatus
from bertops.api.kinds import GROUP, KINDS, VERSION, KindInfo, kind_info
from bertops.api.meta import Condition, ConditionStatus
from bertops.api.model import BertModel, BertModelSpec, BertModelStatus
from bertops.api.training import BertTraining, BertTrainingSpec, BertTrainingStatus

__all__ = [
    "GROUP",
    "KINDS",
    "VERSION",
    "BertDataset",
    "BertDatasetSpec",
    "BertDatasetStatus",
    "BertDeployment",
    "BertDeploymentSpec",
    "BertDeploymentStatus",
    "BertModel",
    "BertModelSpec",
    "BertModelStatus",
    "BertTraining",
    "BertTrainingSpec",
    "BertTrainingStatus",
    "Condition",
    "ConditionStatus",
    "KindInfo",
    "kind_info",
]
