"""spec.model.registry: follow an MLflow Model Registry alias (core: pure; client, poller, sync: I/O)."""
