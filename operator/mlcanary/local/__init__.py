"""Local tooling: a Kubernetes API emulator and helpers for running mlcanary without a cluster."""
