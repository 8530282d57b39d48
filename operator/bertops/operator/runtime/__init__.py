"""Runtimes run step processes for the reconcilers behind one small interface.

``local`` runs each step as a process on this machine; ``kubernetes`` as a Job. Both take
the same :class:`StepRequest` and report the same :class:`StepObservation`, so planners
and reconcilers never know which one is in use.
"""

from bertops.operator.runtime.base import Runtime, StepObservation, StepPhase, StepRequest

__all__ = ["Runtime", "StepObservation", "StepPhase", "StepRequest", "make_runtime"]


def make_runtime(config, api=None):
    """The runtime the config names (imported lazily: each pulls different deps)."""
    if config.runtime == "local":
        from bertops.operator.runtime.local import LocalRuntime

        return LocalRuntime(config)
    from bertops.operator.runtime.kubernetes import KubernetesRuntime

    return KubernetesRuntime(config, api)
