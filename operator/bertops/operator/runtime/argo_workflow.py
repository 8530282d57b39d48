"""Pure builder of the bertops pipeline (prepare → train (N ranks) → evaluate → compress,
any ordered subset) as an Argo Workflow or WorkflowTemplate, with the ``argo-workflows``
SDK models, from the same :class:`StepRequest` objects the native engine turns into Jobs
(:mod:`bertops.operator.runtime.manifests`).

Layout (the native engine's steps, for comparison):

- One template per step kind, named after it: the step image and command, its resources,
  the restricted security contexts, the artifacts PVC and a ``/tmp`` emptyDir. The step
  spec JSON is a workflow parameter (``<kind>-spec``) that Argo writes, as a raw input
  artifact, to the file the native engine mounts from a ConfigMap.
- Results: the step writes its compact result (the native termination message) to
  :data:`RESULT_PATH`; each step node's output parameter ``result`` carries it (empty on
  ranks other than 0, which write none).
- Retries: ``retryStrategy.expression`` retries exit codes 1 and 3 and pod-level errors
  (eviction, deletion: node phase ``Error``), never exit code 2 (bad input), with
  exponential backoff; the attempts are the operator config's ``step_max_attempts``.
- DDP: the train task fans out over ``withSequence`` (one pod per rank, parameter
  ``rank``). The rendezvous equals the Indexed Job's: a ``rendezvous`` resource task
  creates a headless Service named after the Workflow (owned by it, so deleted with it),
  selecting its train pods; a ``podSpecPatch`` gives each rank the hostname
  ``<workflow>-<rank>`` in that subdomain, so ``MASTER_ADDR`` is ``<workflow>-0.<workflow>``,
  the same form as ``<job>-0.<job>``. With one replica the task is skipped and the step
  runs single-process (WORLD_SIZE=1).

The same spec serves the operator's Workflow (parameters with values) and the
WorkflowTemplate in ``gitops/argo`` (parameters without values, supplied at submit):
:mod:`bertops.operator.runtime.argo_template` renders that. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from bertops.operator.config import OperatorConfig
from bertops.operator.runtime.argo_models import (
    ApiClient,
    Arguments,
    Artifact,
    Backoff,
    Capabilities,
    Container,
    ContainerPort,
    DAGTask,
    DAGTemplate,
    EmptyDirVolumeSource,
    EnvFromSource,
    EnvVar,
    Inputs,
    ObjectMeta,
    Outputs,
    OwnerReference,
    Parameter,
    PersistentVolumeClaimVolumeSource,
    PodSecurityContext,
    RawArtifact,
    ResourceRequirements,
    ResourceTemplate,
    RetryStrategy,
    SeccompProfile,
    SecretEnvSource,
    SecurityContext,
    SequenceItems,
    Template,
    TemplateMetadata,
    TTLStrategy,
    ValueFrom,
    Volume,
    VolumeMount,
    Workflow,
    WorkflowSpec,
)
from bertops.operator.runtime.base import StepRequest
from bertops.operator.runtime.manifests import MASTER_PORT, SPEC_MOUNT, tenant_mount

API_VERSION = "argoproj.io/v1alpha1"
ENTRYPOINT = "pipeline"
RENDEZVOUS = "rendezvous"
ORDER = ("prepare", "train", "evaluate", "compress")
RESULT_PATH = "/tmp/bertops-result.json"  # on the /tmp emptyDir: the root fs is read-only
SPEC_PATH = f"{SPEC_MOUNT}/spec.json"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"  # Argo sets it on every pod of a Workflow
COMPONENT_LABEL = "app.kubernetes.io/component"
# Exit 2 (bad input) is never retried; 1 (unexpected) and 3 (transient) are, and so is a
# pod that ended without an exit code of its own (node phase Error: evicted, deleted).
RETRY_EXPRESSION = 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) in [1, 3]'
STEP_KIND_LABEL = "bertops.io/step-kind"  # on a one-step Workflow: which node holds the result
MAX_NAME = 60  # "<name>-<rank>" must stay a DNS label (63) for the rank hostnames


def spec_parameter(kind: str) -> str:
    return f"{kind}-spec"


def _ordered(steps: Sequence[StepRequest]) -> list[StepRequest]:
    kinds = [step.kind for step in steps]
    if len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(f"a pipeline runs each step kind at most once, got {kinds}")
    return sorted(steps, key=lambda step: ORDER.index(step.kind))


def _env(step: StepRequest) -> list[EnvVar]:
    env = [
        EnvVar(name="HF_HUB_OFFLINE", value="1"),
        EnvVar(name="TRANSFORMERS_OFFLINE", value="1"),
        EnvVar(name="PYTHONUNBUFFERED", value="1"),
        EnvVar(name="BERTOPS_TERMINATION_LOG", value=RESULT_PATH),
    ]
    if step.kind == "train":
        # The torch.distributed env contract, as the native Indexed Job sets it.
        env += [
            EnvVar(name="MASTER_ADDR", value="{{workflow.name}}-0.{{workflow.name}}"),
            EnvVar(name="MASTER_PORT", value=str(MASTER_PORT)),
            EnvVar(name="WORLD_SIZE", value="{{workflow.parameters.replicas}}"),
            EnvVar(name="RANK", value="{{inputs.parameters.rank}}"),
            EnvVar(name="LOCAL_RANK", value="0"),
        ]
    return env


def _resources(step: StepRequest) -> ResourceRequirements:
    requests = {"cpu": step.cpu, "memory": step.memory}
    limits = {"memory": step.memory}
    if step.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(step.gpu)
    return ResourceRequirements(requests=requests, limits=limits)


def container_security_context() -> SecurityContext:
    """The SDK form of :func:`bertops.operator.runtime.manifests.container_security_context`
    (a test checks they serialize the same)."""
    return SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=Capabilities(drop=["ALL"]),
    )


def pod_security_context() -> PodSecurityContext:
    """The SDK form of :func:`bertops.operator.runtime.manifests.pod_security_context`."""
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=1000,
        run_as_group=1000,
        fs_group=1000,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def _container(step: StepRequest, config: OperatorConfig) -> Container:
    container = Container(
        image=config.image,
        image_pull_policy=config.image_pull_policy,
        command=[*config.step_command, step.kind, "--spec", SPEC_PATH],
        env=_env(step),
        resources=_resources(step),
        security_context=container_security_context(),
        volume_mounts=[
            VolumeMount(
                name="artifacts", mount_path=tenant_mount(config.artifact_mount, step.namespace)
            ),
            VolumeMount(name="tmp", mount_path="/tmp"),
        ],
    )
    if step.env_secrets:
        container.env_from = [
            EnvFromSource(secret_ref=SecretEnvSource(name=name)) for name in step.env_secrets
        ]
    if step.kind == "train":
        container.ports = [ContainerPort(name="dist", container_port=MASTER_PORT, protocol="TCP")]
    return container


def retry_strategy(config: OperatorConfig) -> RetryStrategy:
    return RetryStrategy(
        limit=str(max(config.step_max_attempts - 1, 0)),
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=Backoff(
            duration=f"{int(config.step_retry_base_seconds)}s",
            factor="2",
            cap=f"{int(config.step_retry_max_seconds)}s",
        ),
    )


def step_template(step: StepRequest, config: OperatorConfig) -> Template:
    """The template running one step kind (a pod per call; per rank for train)."""
    parameters = [Parameter(name="spec")]
    if step.kind == "train":
        parameters.append(Parameter(name="rank"))
    template = Template(
        name=step.kind,
        metadata=TemplateMetadata(
            labels={"app.kubernetes.io/part-of": "bertops", COMPONENT_LABEL: f"step-{step.kind}"}
        ),
        inputs=Inputs(
            parameters=parameters,
            artifacts=[
                Artifact(
                    name="spec", path=SPEC_PATH, raw=RawArtifact(data="{{inputs.parameters.spec}}")
                )
            ],
        ),
        outputs=Outputs(
            parameters=[
                Parameter(name="result", value_from=ValueFrom(path=RESULT_PATH, default=""))
            ]
        ),
        container=_container(step, config),
        retry_strategy=retry_strategy(config),
    )
    if step.kind == "train":
        # Each rank gets a stable DNS name in the rendezvous Service's subdomain.
        template.pod_spec_patch = json.dumps(
            {
                "hostname": "{{workflow.name}}-{{inputs.parameters.rank}}",
                "subdomain": "{{workflow.name}}",
            },
            separators=(",", ":"),
        )
    return template


def rendezvous_service() -> dict[str, Any]:
    """The headless Service giving rank 0 a stable name (``<workflow>-0.<workflow>``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "{{workflow.name}}",
            "labels": {"app.kubernetes.io/part-of": "bertops", WORKFLOW_LABEL: "{{workflow.name}}"},
        },
        "spec": {
            "clusterIP": "None",
            "selector": {WORKFLOW_LABEL: "{{workflow.name}}", COMPONENT_LABEL: "step-train"},
            "ports": [{"name": "dist", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            "publishNotReadyAddresses": True,  # ranks find each other before Ready
        },
    }


def rendezvous_template() -> Template:
    return Template(
        name=RENDEZVOUS,
        resource=ResourceTemplate(
            action="apply",
            set_owner_reference=True,  # deleted with the Workflow
            manifest=yaml.safe_dump(rendezvous_service(), sort_keys=False),
        ),
    )


def _tasks(steps: list[StepRequest]) -> list[DAGTask]:
    tasks: list[DAGTask] = []
    previous: list[str] = []
    for step in steps:
        spec_arg = Parameter(
            name="spec", value=f"{{{{workflow.parameters.{spec_parameter(step.kind)}}}}}"
        )
        if step.kind != "train":
            task = DAGTask(
                name=step.kind, template=step.kind, arguments=Arguments(parameters=[spec_arg])
            )
        else:
            tasks.append(
                DAGTask(
                    name=RENDEZVOUS,
                    template=RENDEZVOUS,
                    when="{{workflow.parameters.replicas}} > 1",
                )
            )
            task = DAGTask(
                name="train",
                template="train",
                arguments=Arguments(
                    parameters=[spec_arg, Parameter(name="rank", value="{{item}}")]
                ),
                with_sequence=SequenceItems(count="{{workflow.parameters.replicas}}"),
            )
            # A skipped rendezvous (one replica) still lets train run.
            previous = [*previous, f"{RENDEZVOUS}.Succeeded || {RENDEZVOUS}.Skipped"]
        if previous:
            task.depends = " && ".join(
                f"({clause})" if "||" in clause else clause for clause in previous
            )
        tasks.append(task)
        previous = [f"{step.kind}.Succeeded"]
    return tasks


def pipeline_spec(
    steps: Sequence[StepRequest], config: OperatorConfig, *, values: bool = True
) -> WorkflowSpec:
    """The Workflow spec running ``steps`` in pipeline order. With ``values`` the step
    specs (their ``result_uri`` set as the native engine does) and replicas are the
    parameters' values; without, the parameters are left for the submitter."""
    ordered = _ordered(steps)
    parameters = []
    for step in ordered:
        result_uri = f"{config.artifact_mount}/{step.namespace}/steps/{step.name}/result.json"
        spec = step.spec.model_copy(update={"result_uri": result_uri})
        text = spec.model_dump_json(by_alias=True, exclude_none=True)
        parameters.append(
            Parameter(name=spec_parameter(step.kind), value=text)
            if values
            else Parameter(
                name=spec_parameter(step.kind), description=f"the {step.kind} step spec (JSON)"
            )
        )
        if step.kind == "train":
            parameters.append(
                Parameter(name="replicas", value=str(step.replicas))
                if values
                else Parameter(name="replicas", value="1", description="torch.distributed ranks")
            )
    templates = [Template(name=ENTRYPOINT, dag=DAGTemplate(tasks=_tasks(ordered)))]
    templates += [step_template(step, config) for step in ordered]
    if any(step.kind == "train" for step in ordered):
        templates.append(rendezvous_template())
    return WorkflowSpec(
        entrypoint=ENTRYPOINT,
        arguments=Arguments(parameters=parameters),
        templates=templates,
        service_account_name=config.service_account,
        security_context=pod_security_context(),
        volumes=[
            Volume(
                name="artifacts",
                persistent_volume_claim=PersistentVolumeClaimVolumeSource(
                    claim_name=config.artifact_pvc
                ),
            ),
            Volume(name="tmp", empty_dir=EmptyDirVolumeSource()),
        ],
        # Kept a day after it ends, as the native Jobs are (ttlSecondsAfterFinished).
        ttl_strategy=TTLStrategy(seconds_after_completion=86400),
    )


def workflow(
    name: str,
    namespace: str,
    steps: Sequence[StepRequest],
    config: OperatorConfig,
    owner: dict[str, Any] | None = None,
) -> Workflow:
    """The Workflow the operator creates for ``steps`` (owned by ``owner``, its object)."""
    if len(name) > MAX_NAME:
        raise ValueError(f"workflow name {name!r} is longer than {MAX_NAME} characters")
    meta = ObjectMeta(
        name=name, namespace=namespace, labels={"app.kubernetes.io/part-of": "bertops"}
    )
    if len(steps) == 1:
        meta.labels[STEP_KIND_LABEL] = steps[0].kind
    if owner:
        meta.labels[f"bertops.io/{owner['kind'].lower()}"] = owner["name"]
        meta.owner_references = [
            OwnerReference(
                api_version=owner["apiVersion"],
                kind=owner["kind"],
                name=owner["name"],
                uid=owner["uid"],
                controller=bool(owner.get("controller", True)),
                block_owner_deletion=bool(owner.get("blockOwnerDeletion", True)),
            )
        ]
    return Workflow(
        api_version=API_VERSION, kind="Workflow", metadata=meta, spec=pipeline_spec(steps, config)
    )


def to_dict(model: Any) -> dict[str, Any]:
    """The Kubernetes JSON form (camelCase keys, no unset fields) of an SDK model."""
    found: dict[str, Any] = ApiClient.sanitize_for_serialization(model)
    head: dict[str, Any] = {
        key: found.pop(key) for key in ("apiVersion", "kind", "metadata") if key in found
    }
    return {**head, **found}
