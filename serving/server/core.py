"""ServerCore: the model server without its front-ends. REST and gRPC both call these methods.

It owns the config, the file-system source and the manager, and implements every API once —
Predict, Classify, Regress, MultiInference, GetModelMetadata, GetModelStatus, ReloadConfig — on
plain Python values (numpy arrays, serialized tf.Examples), plus warmup replay before a version
becomes AVAILABLE.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, input_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving.server import servable as servable_lib
from serving.server.batching import BatchingOptions, BatchScheduler, per_model_options
from serving.server.errors import ServingError, invalid, not_found
from serving.server.execution import Budget, Limits, ModelQueues
from serving.server.manager import Manager, VersionState
from serving.server.metrics import Metrics
from serving.server.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable, Signature
from serving.server.source import FileSystemSource
from serving.server.tensorboard_log import ServingLog
from serving.server.tensors import decode_b64, is_b64, to_ndarray

log = logging.getLogger("tfzoo.serving")

MAX_WARMUP_RECORDS = 1000
INITIAL_LOAD_TIMEOUT_SECONDS = 600


@dataclasses.dataclass
class Options:
    """The flags the core needs (names as in tensorflow_model_server)."""

    file_system_poll_wait_seconds: float = 1
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    saved_model_tags: str = "serve"
    tflite: tuple[int, int] | None = None  # --prefer_tflite_model: (pools, interpreters per pool)
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    enable_signature_method_name_check: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    batching: BatchingOptions | None = None
    enable_per_model_batching_parameters: bool = False
    num_load_threads: int = 0
    num_unload_threads: int = 0
    metrics: Metrics | None = None
    serving_log: ServingLog | None = None  # --tensorboard_logdir
    limits: Limits = Limits()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which servable a request names: model, and optionally a version or a label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


def default_session_config() -> config_pb2.ConfigProto:
    """The Session config without --tensorflow_session_config_file: TensorFlow's, with thread spinning off.

    Eigen's pool threads spin for a while after their work runs out, waiting for more. In this server the
    Python threads that decode, validate and batch requests (the gRPC and REST event loops) need the same
    cores, and on a small machine the spinning takes CPU from them: measured on 2 cores with `cnn` at c=32
    (bench/results/serving.md), gRPC with batching answered ~13% more requests/s with spinning off, REST 1-4%
    more, and p50 at concurrency 1 did not change. A session config file is taken as written, so
    `experimental { disable_thread_spinning: false }` in one gives TensorFlow's (and TF Serving's) default back.
    """
    config = config_pb2.ConfigProto()
    config.experimental.disable_thread_spinning = True
    return config


class ServerCore:
    """Config, source and manager, and every request type implemented once."""

    def __init__(self, options: Options):
        self.options = options
        # --tensorflow_session_config_file, with the thread flags over it when they are set (TF Serving's rule).
        self.session_config = (config_lib.read_text(options.tensorflow_session_config_file, config_pb2.ConfigProto)
                               if options.tensorflow_session_config_file else default_session_config())
        if options.tensorflow_intra_op_parallelism:
            self.session_config.intra_op_parallelism_threads = options.tensorflow_intra_op_parallelism
        if options.tensorflow_inter_op_parallelism:
            self.session_config.inter_op_parallelism_threads = options.tensorflow_inter_op_parallelism
        self.manager = Manager(self._load, self._warmup, max_num_load_retries=options.max_num_load_retries,
                               load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
                               num_load_threads=options.num_load_threads,
                               num_unload_threads=options.num_unload_threads)
        self.source = FileSystemSource(self.manager.set_aspired_versions, options.file_system_poll_wait_seconds)
        self.config = model_server_config_pb2.ModelServerConfig()
        self._config_lock = threading.Lock()
        self.metrics = options.metrics
        self.serving_log = options.serving_log
        self.batch_scheduler = (BatchScheduler(options.batching, self.metrics.queued if self.metrics else None,
                                               self.serving_log.batch if self.serving_log else None)
                                if options.batching else None)
        self.limits = options.limits
        self.queues = ModelQueues(options.limits)
        self.budget = Budget(options.limits.max_in_flight_bytes)

    def submit(self, model: str, fn, *args) -> concurrent.futures.Future:
        """Run `fn(*args)` on the queue of `model` (classify, regress, multi-inference: all model code)."""
        if not self.manager.knows(model):  # no queue is made for names a client makes up
            raise not_found(f"Servable not found for request: Latest({model})")
        return self.queues[model].submit(fn, *args)

    def observe(self, model: str, api: str, entrypoint: str, error: ServingError | None, seconds: float,
                version: int | None = None, signature: str | None = None) -> None:
        """Record one request in the metrics (when monitoring is on)."""
        status = "OK" if error is None else error.code.name
        version = version if version is not None else getattr(error, "version", None)  # see start_predict
        if self.metrics is not None:
            self.metrics.request(model, api, entrypoint, status, seconds, version, signature)
        if self.serving_log is not None:
            self.serving_log.request(model, version, status, seconds)

    # --- config -------------------------------------------------------------------------------------

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig,
                     timeout: float = INITIAL_LOAD_TIMEOUT_SECONDS) -> None:
        """Serve exactly the models of `config` (others are unloaded); wait for their loads; set labels."""
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               "ModelServerConfig.custom_model_config is not supported; use model_config_list")
        models = list(config.model_config_list.config)
        names = [m.name for m in models]
        for m in models:
            if not m.name or not m.base_path:
                raise invalid(f"Every model config needs a name and a base_path: {m}")
            if m.model_platform not in ("", "tensorflow"):
                raise invalid(f"Model {m.name}: platform {m.model_platform!r} is not supported (only 'tensorflow')")
        if len(set(names)) != len(names):
            raise invalid(f"Illegal to list model {next(n for n in names if names.count(n) > 1)} "
                          "multiple times in config list")
        with self._config_lock:
            old = {m.name for m in self.config.model_config_list.config}
            for name in old - set(names):
                log.info("Model %s is not in the new config: unloading it", name)
                self.manager.remove_model(name)
                self.queues.remove(name)
            self.source.set_models(models)
            self.manager.wait_until_settled(names, timeout)
            self.manager.end_initial_load()
            for m in models:
                self._apply_labels(m)
            self.config = config

    def _apply_labels(self, model: model_server_config_pb2.ModelConfig) -> None:
        labels = dict(model.version_labels)
        if not self.options.allow_version_labels_for_unavailable_models:
            available = set(self.manager.available_versions(model.name))
            for version in labels.values():
                if version not in available:
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"Request to assign label to version {version} of model {model.name}, "
                                       "which is not currently available for inference")
        self.manager.set_labels(model.name, labels)

    def start(self) -> None:
        """Start polling base paths."""
        self.source.start()

    def stop(self) -> None:
        """Stop polling and unload everything, draining requests in flight; write the last serving log."""
        self.source.stop()
        self.manager.stop()
        if self.serving_log is not None:
            self.serving_log.stop()

    def ready(self) -> bool:
        """True when every configured model has an AVAILABLE version (tfzoo's readiness extension)."""
        names = [m.name for m in self.config.model_config_list.config]
        return bool(names) and all(self.manager.available_versions(n) for n in names)

    # --- loading and warmup -------------------------------------------------------------------------

    def _load(self, name: str, version: int, path: str) -> Servable:
        tags = [t for t in self.options.saved_model_tags.split(",") if t]
        scheduler, batching = self.batch_scheduler, None
        if scheduler is not None and self.options.enable_per_model_batching_parameters:
            # TF Serving: the version's own batching_params.pbtxt, and no batching for a version without one.
            batching = per_model_options(path)
            scheduler = scheduler if batching is not None else None
        return servable_lib.load(name, version, path, tflite=self.options.tflite, tags=tags,
                                 session_config=self.model_session_config(name),
                                 batch_scheduler=scheduler, batching=batching,
                                 on_runtime=self.metrics.runtime if self.metrics else None)

    def model_session_config(self, name: str) -> config_pb2.ConfigProto:
        """The Session config of model `name`'s versions: TensorFlow's inter-op threads of its own.

        With one process-wide inter-op pool (TF Serving's), a model whose graph runs long loops (gpt's
        1,024-token `generate`) keeps every inter-op thread busy and another model's ops wait in the pool's
        queue behind it (measured: cnn fell to 2-3% of its requests/s). A pool per model, shared by its
        versions (`global_name`), leaves the sharing of the cores to the OS scheduler, thread by thread.
        """
        config = config_pb2.ConfigProto()
        config.CopyFrom(self.session_config)
        config.session_inter_op_thread_pool.add(num_threads=self.session_config.inter_op_parallelism_threads,
                                                global_name=f"tfzoo-model:{name}")
        return config

    def _warmup(self, servable: Servable) -> None:
        """Replay assets.extra/tf_serving_warmup_requests (at most 1000 records) before serving."""
        path = servable.warmup_file
        if not self.options.enable_model_warmup or not path.is_file():
            return
        iterations = max(1, self.options.num_request_iterations_for_warmup)
        count = 0
        for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for _ in range(iterations):
                self._replay(servable, log_entry)
            count += 1
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, count)

    def _replay(self, servable: Servable, entry: prediction_log_pb2.PredictionLog) -> None:
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = entry.predict_log.request
            inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
            self.predict_on(servable, request.model_spec.signature_name, inputs, list(request.output_filter))
        elif kind == "classify_log":
            request = entry.classify_log.request
            self.classify_on(servable, request.model_spec.signature_name, examples_from_input(request.input))
        elif kind == "regress_log":
            request = entry.regress_log.request
            self.regress_on(servable, request.model_spec.signature_name, examples_from_input(request.input))
        elif kind == "multi_inference_log":
            request = entry.multi_inference_log.request
            examples = examples_from_input(request.input)
            for task in request.tasks:
                self._infer_on(servable, task.method_name, task.model_spec.signature_name, examples)
        else:
            raise invalid(f"Unsupported log_type for warmup: {kind}")

    # --- requests -----------------------------------------------------------------------------------

    def start_predict(self, spec: ModelSpec, inputs, output_filter=()):
        """Validate a Predict and queue it on its model's queue (or batch) without waiting: (servable,
        signature, future of the outputs, output aliases).

        `inputs` is alias -> array, or a function of the Signature that builds them (REST needs the
        signature's dtypes to read JSON values). The servable stays acquired: the caller releases it once
        the future is done (or cancelled: a cancelled future never runs).
        """
        servable = self.manager.resolve(spec.name, spec.version, spec.label)
        try:
            signature = servable.signature(spec.signature_name)
            if callable(inputs):
                inputs = inputs(signature)
            future, aliases = servable.start(signature, inputs, output_filter, self.queues[spec.name])
            if self.serving_log is not None:
                future.add_done_callback(functools.partial(self._log_predict, servable, inputs, aliases))
            return servable, signature, future, aliases
        except BaseException as e:
            servable.release()
            if isinstance(e, ServingError):
                e.version = servable.version  # the version that refused it (its metrics and serving log)
            raise

    def _log_predict(self, servable: Servable, inputs: dict, aliases: list[str],
                     done: concurrent.futures.Future) -> None:
        """What a finished Predict saw and answered, for --tensorboard_logdir (on the thread that ran it)."""
        if done.cancelled() or done.exception() is not None:
            return
        try:
            self.serving_log.predicted(servable.name, servable.version, servable.path, inputs,
                                       dict(zip(aliases, done.result(), strict=True)))
        except Exception:  # a summary must never fail a request
            log.exception("TensorBoard serving log of %s failed", servable.name)

    def predict_on(self, servable: Servable, signature_name: str, inputs, output_filter=()) -> dict[str, np.ndarray]:
        """Predict on one servable (also used by warmup)."""
        signature = servable.signature(signature_name)
        return servable.run(signature, inputs, output_filter)

    def classify(self, spec: ModelSpec, examples: list[bytes]):
        """Classify serialized tf.Examples; return (version, signature name, [[(label, score), ...], ...])."""
        with self.manager.handle(spec.name, spec.version, spec.label) as s:
            signature = s.signature(spec.signature_name)
            return s.version, signature.name, self.classify_on(s, signature.name, examples)

    def classify_on(self, servable: Servable, signature_name: str, examples: list[bytes]):
        """Classify on one servable."""
        signature = servable.signature(signature_name)
        self._check_method(signature, CLASSIFY_METHOD, "classification")
        wanted = [a for a in ("classes", "scores") if a in signature.outputs]
        if not wanted:
            raise invalid(f"Expected classification signature outputs to contain at least one of "
                          f"{{classes, scores}}. Signature contained: {sorted(signature.outputs)}")
        outputs = servable.run(signature, _example_feed(signature, examples), wanted)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        n = len(examples)
        for alias, value in (("classes", classes), ("scores", scores)):
            if value is not None and (value.ndim != 2 or value.shape[0] != n):
                raise invalid(f"Expected Tensor shape: [{n} num_classes] but got {list(value.shape)} for {alias}")
        width = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(n):
            row = []
            for j in range(width):
                label = classes[i, j].decode("utf-8", "replace") if classes is not None else ""
                score = float(scores[i, j]) if scores is not None else 0.0
                row.append((label, score))
            results.append(row)
        return results

    def _check_method(self, signature: Signature, method: str, what: str) -> None:
        """With --enable_signature_method_name_check, Classify and Regress run only on signatures of their own
        method_name; without it (TF Serving's default), on any signature whose inputs and outputs fit, as a
        native TF2/Keras export's `tensorflow/serving/predict` signatures do."""
        if self.options.enable_signature_method_name_check and signature.method_name != method:
            raise invalid(f"Expected {what} signature method_name to be {method}. Was: {signature.method_name}")

    def regress(self, spec: ModelSpec, examples: list[bytes]):
        """Regress serialized tf.Examples; return (version, signature name, [value, ...])."""
        with self.manager.handle(spec.name, spec.version, spec.label) as s:
            signature = s.signature(spec.signature_name)
            return s.version, signature.name, self.regress_on(s, signature.name, examples)

    def regress_on(self, servable: Servable, signature_name: str, examples: list[bytes]) -> list[float]:
        """Regress on one servable."""
        signature = servable.signature(signature_name)
        self._check_method(signature, REGRESS_METHOD, "regression")
        if "outputs" not in signature.outputs:
            raise invalid(f"No regression outputs found in SignatureDef: {signature.name}")
        values = servable.run(signature, _example_feed(signature, examples), ["outputs"])["outputs"]
        n = len(examples)
        if not (values.shape == (n,) or values.shape == (n, 1)):
            raise invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                          f"but got {list(values.shape)}")
        return [float(v) for v in values.reshape(n)]

    def multi_inference(self, model: str, version: int | None, label: str | None,
                        tasks: list[tuple[str, str]], examples: list[bytes]):
        """Several classify/regress tasks of one model on the same examples; return (version, results)."""
        if not tasks:
            raise invalid("MultiInferenceRequest must specify at least one task")
        signature_names = [signature for signature, _ in tasks]
        if len(set(signature_names)) != len(signature_names):
            raise invalid("Duplicate evaluation of signature: " +
                          next(n for n in signature_names if signature_names.count(n) > 1))
        with self.manager.handle(model, version, label) as s:
            results = [(sig, method, self._infer_on(s, method, sig, examples)) for sig, method in tasks]
            return s.version, results

    def _infer_on(self, servable: Servable, method: str, signature_name: str, examples: list[bytes]):
        if method == CLASSIFY_METHOD:
            return self.classify_on(servable, signature_name, examples)
        if method == REGRESS_METHOD:
            return self.regress_on(servable, signature_name, examples)
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")

    def metadata(self, spec: ModelSpec) -> tuple[int, meta_graph_pb2.SignatureDef]:
        """(version, SignatureDefMap) of the servable `spec` names."""
        with self.manager.handle(spec.name, spec.version, spec.label) as s:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, value in s.meta_graph.signature_def.items():
                signatures.signature_def[key].CopyFrom(value)
            return s.version, signatures

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionState]:
        """Version states of a model (one version if asked), as GetModelStatus reports them."""
        states = self.manager.status(name)
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        if label:
            version = self.manager.label_version(name, label)
            if version is None:
                raise invalid(f"Unrecognized servable version label: {label}")
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise not_found(f"Could not find version {version} of model {name}")
        return states

    def all_models(self) -> list[str]:
        """Names of the configured models."""
        return [m.name for m in self.config.model_config_list.config]




def _example_feed(signature: Signature, examples: list[bytes]) -> dict[str, np.ndarray]:
    if len(signature.inputs) != 1:
        raise invalid(f"Expected one input Tensor. Signature {signature.name} has {len(signature.inputs)}")
    if not examples:
        raise invalid("Input is empty.")
    alias = next(iter(signature.inputs))
    feed = np.empty(len(examples), dtype=object)
    feed[:] = examples
    return {alias: feed}


def examples_from_input(request_input: input_pb2.Input) -> list[bytes]:
    """Serialized tf.Examples of an Input proto; with a context, each example is merged over it."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        data = request_input.example_list_with_context
        context = data.context.SerializeToString()
        # Concatenated serializations parse as a merge: the example's features win over the context's.
        return [context + e.SerializeToString() for e in data.examples]
    raise invalid("Input is empty.")


def example_from_json(features: dict, what: str) -> example_pb2.Example:
    """A tf.Example from TF Serving's JSON form: name -> number | string | {"b64"} | list of one kind."""
    if not isinstance(features, dict):
        raise invalid(f"{what}: an example must be a JSON object of feature name -> value")
    example = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if all(isinstance(v, bool) for v in values) and values:
            raise invalid(f"{what}: feature {name}: JSON booleans are not a tf.Example type")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        elif all(isinstance(v, str) or is_b64(v) for v in values):
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else decode_b64(v["b64"]) for v in values)
        else:
            raise invalid(f"{what}: feature {name}: values must all be numbers or all strings/b64, got {value!r:.80}")
    return example


def examples_from_json(examples, context, what: str = "examples") -> list[bytes]:
    """Serialized tf.Examples from a REST classify/regress body's `examples` and optional `context`."""
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty JSON array of objects")
    base = example_from_json(context, "context").SerializeToString() if context is not None else b""
    return [base + example_from_json(e, f"{what}[{i}]").SerializeToString() for i, e in enumerate(examples)]
