"""bertops.ui: the management service over the Kubernetes API and the artifact store.

:mod:`~bertops.ui.catalog` is the one read/write layer (the ``bertops models|datasets|
trainings`` CLI and the web UI both use it), :mod:`~bertops.ui.views` shapes objects into
what people read, :mod:`~bertops.ui.artifacts` reads and verifies model artifacts,
:mod:`~bertops.ui.app` is the ASGI app (`bertops ui`): JSON API, OpenAPI and HTML pages.
Never imports torch, transformers, the trainer or the server (import-linter checks it).
"""
