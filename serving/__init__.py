"""tfzoo's serving layer: how a model is USED.

`serving.server` is tfzoo-model-server, a drop-in for TensorFlow Serving's tensorflow_model_server
(REST + gRPC); `serving.client` speaks both protocols; `serving.launch` starts the real
tensorflow_model_server when it is installed and tfzoo-model-server otherwise; `serving.config`
reads and writes TF Serving's text-proto config files. Nothing here imports `zoo` or `pipelines`:
the server serves any SavedModel.
"""
