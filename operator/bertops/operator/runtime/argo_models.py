"""Short names for the ``argo-workflows`` SDK models that :mod:`.argo` builds Workflows
from (the SDK's own names are ``IoArgoprojWorkflowV1alpha1...``); importing them one module
at a time keeps the operator's start-up from loading all ~400 models of
``argo_workflows.models``.
"""

from __future__ import annotations

from argo_workflows.api_client import ApiClient
from argo_workflows.model.capabilities import Capabilities
from argo_workflows.model.container import Container
from argo_workflows.model.container_port import ContainerPort
from argo_workflows.model.empty_dir_volume_source import EmptyDirVolumeSource
from argo_workflows.model.env_from_source import EnvFromSource
from argo_workflows.model.env_var import EnvVar
from argo_workflows.model.io_argoproj_workflow_v1alpha1_arguments import (
    IoArgoprojWorkflowV1alpha1Arguments as Arguments,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_artifact import (
    IoArgoprojWorkflowV1alpha1Artifact as Artifact,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_backoff import (
    IoArgoprojWorkflowV1alpha1Backoff as Backoff,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_dag_task import (
    IoArgoprojWorkflowV1alpha1DAGTask as DAGTask,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_dag_template import (
    IoArgoprojWorkflowV1alpha1DAGTemplate as DAGTemplate,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_inputs import (
    IoArgoprojWorkflowV1alpha1Inputs as Inputs,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_metadata import (
    IoArgoprojWorkflowV1alpha1Metadata as TemplateMetadata,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_outputs import (
    IoArgoprojWorkflowV1alpha1Outputs as Outputs,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_parameter import (
    IoArgoprojWorkflowV1alpha1Parameter as Parameter,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_raw_artifact import (
    IoArgoprojWorkflowV1alpha1RawArtifact as RawArtifact,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_resource_template import (
    IoArgoprojWorkflowV1alpha1ResourceTemplate as ResourceTemplate,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_retry_strategy import (
    IoArgoprojWorkflowV1alpha1RetryStrategy as RetryStrategy,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_sequence import (
    IoArgoprojWorkflowV1alpha1Sequence as SequenceItems,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_template import (
    IoArgoprojWorkflowV1alpha1Template as Template,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_ttl_strategy import (
    IoArgoprojWorkflowV1alpha1TTLStrategy as TTLStrategy,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_value_from import (
    IoArgoprojWorkflowV1alpha1ValueFrom as ValueFrom,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow import (
    IoArgoprojWorkflowV1alpha1Workflow as Workflow,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_spec import (
    IoArgoprojWorkflowV1alpha1WorkflowSpec as WorkflowSpec,
)
from argo_workflows.model.object_meta import ObjectMeta
from argo_workflows.model.owner_reference import OwnerReference
from argo_workflows.model.persistent_volume_claim_volume_source import (
    PersistentVolumeClaimVolumeSource,
)
from argo_workflows.model.pod_security_context import PodSecurityContext
from argo_workflows.model.resource_requirements import ResourceRequirements
from argo_workflows.model.seccomp_profile import SeccompProfile
from argo_workflows.model.secret_env_source import SecretEnvSource
from argo_workflows.model.security_context import SecurityContext
from argo_workflows.model.volume import Volume
from argo_workflows.model.volume_mount import VolumeMount

__all__ = [
    "ApiClient",
    "Arguments",
    "Artifact",
    "Backoff",
    "Capabilities",
    "Container",
    "ContainerPort",
    "DAGTask",
    "DAGTemplate",
    "EmptyDirVolumeSource",
    "EnvFromSource",
    "EnvVar",
    "Inputs",
    "ObjectMeta",
    "Outputs",
    "OwnerReference",
    "Parameter",
    "PersistentVolumeClaimVolumeSource",
    "PodSecurityContext",
    "RawArtifact",
    "ResourceRequirements",
    "ResourceTemplate",
    "RetryStrategy",
    "SeccompProfile",
    "SecretEnvSource",
    "SecurityContext",
    "SequenceItems",
    "TTLStrategy",
    "Template",
    "TemplateMetadata",
    "ValueFrom",
    "Volume",
    "VolumeMount",
    "Workflow",
    "WorkflowSpec",
]
