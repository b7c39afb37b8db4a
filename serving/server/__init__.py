"""tfzoo-model-server: TensorFlow Serving's model server, in the vocabulary of TF Serving.

source (base paths, version policy) -> manager (load, warm, swap, drain, unload) -> servable
(one SavedModel version) -> ServerCore (every API once) -> REST and gRPC front-ends.
"""
