"""The TFRS multi-task model: feature encoders, shared encoder, task towers, masked loss, training, export."""
