"""The local single-node Kubernetes harness (see hack/local-cluster and hack/README.md)."""
