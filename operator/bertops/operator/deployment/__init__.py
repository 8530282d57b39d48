"""bertops.operator.deployment: the BertDeployment reconciler and its serving backends.

- :mod:`~bertops.operator.deployment.reconciler` gathers what the pure rollout core needs
  (the namespace's BertModels, the manual action, the gateway's metrics), calls
  :func:`bertops.operator.rollout.state.decide` and hands the outcome to a backend;
- :mod:`~bertops.operator.deployment.target` is what both backends are asked to serve;
- :mod:`~bertops.operator.deployment.processes` runs servers and gateways as local
  processes (local runtime);
- :mod:`~bertops.operator.deployment.local` orders a local route change (start, wait
  ready, shift, drain, stop);
- :mod:`~bertops.operator.deployment.kubernetes` applies the pure builders of
  :mod:`bertops.operator.deployment.server_manifests` through the kube layer (kubernetes runtime).

Called by :class:`bertops.operator.reconcile.Reconciler` for the kind BertDeployment.
"""
