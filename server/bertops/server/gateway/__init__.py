"""bertops.server.gateway: the front door of a BertDeployment (canary routing, shadow
traffic, feedback, per-variant metrics). Imports neither torch nor transformers."""
