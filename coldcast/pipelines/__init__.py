"""Kubeflow Pipelines v2 definitions: the training and monitoring pipelines, built from the components."""
