"""Config messages TF Serving defines but `tensorflow-serving-api` does not ship, built from descriptors.

MonitoringConfig (tensorflow_serving/config/monitoring_config.proto), SSLConfig
(tensorflow_serving/config/ssl_config.proto) and BatchingParameters
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto), with TF Serving's package,
message and field names and numbers, so the same text files parse here and in TF Serving.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> F:
    label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    field = F(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _build():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="tfzoo/tensorflow_serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.extend([_field("enable", 1, F.TYPE_BOOL), _field("path", 2, F.TYPE_STRING)])
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.extend([_field("prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")])
    ssl = file.message_type.add(name="SSLConfig")
    ssl.field.extend([_field("server_key", 1, F.TYPE_STRING), _field("server_cert", 2, F.TYPE_STRING),
                      _field("custom_ca", 3, F.TYPE_STRING), _field("client_verify", 4, F.TYPE_BOOL)])
    batching = file.message_type.add(name="BatchingParameters")
    int64, string, boolean = (".google.protobuf.Int64Value", ".google.protobuf.StringValue",
                              ".google.protobuf.BoolValue")
    batching.field.extend([
        _field("max_batch_size", 1, F.TYPE_MESSAGE, int64),
        _field("batch_timeout_micros", 2, F.TYPE_MESSAGE, int64),
        _field("max_enqueued_batches", 3, F.TYPE_MESSAGE, int64),
        _field("num_batch_threads", 4, F.TYPE_MESSAGE, int64),
        _field("thread_pool_name", 5, F.TYPE_MESSAGE, string),
        _field("allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True),
        _field("pad_variable_length_inputs", 7, F.TYPE_BOOL),
        _field("enable_large_batch_splitting", 8, F.TYPE_MESSAGE, boolean),
        _field("max_execution_batch_size", 9, F.TYPE_MESSAGE, int64),
    ])
    pool.Add(file)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))  # noqa: E731
    return get("MonitoringConfig"), get("SSLConfig"), get("BatchingParameters")


MonitoringConfig, SSLConfig, BatchingParameters = _build()
