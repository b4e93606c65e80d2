"""The core: spec, data, synthetic world and validation; imports none of TensorFlow, kfp, BentoML or Evidently."""
