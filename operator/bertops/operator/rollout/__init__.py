"""bertops.operator.rollout: the pure core of a BertDeployment's canary rollout.

- :mod:`~bertops.operator.rollout.selection` picks the model a deployment should serve;
- :mod:`~bertops.operator.rollout.metrics` turns Prometheus text (gateway, servers) or a
  Prometheus server's answers into per-variant observations;
- :mod:`~bertops.operator.rollout.gates` judges a canary against stable and bounds;
- :mod:`~bertops.operator.rollout.actions` parses the manual-action annotation;
- :mod:`~bertops.operator.rollout.state` is the state machine: one pure ``decide``.

The BertDeployment reconciler calls them; nothing here does I/O except the two metric
readers in ``metrics``, and nothing imports torch.
"""
