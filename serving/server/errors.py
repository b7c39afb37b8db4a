"""Errors as TF Serving reports them: a gRPC status code and a message, mapped to HTTP for REST."""
from __future__ import annotations

import grpc

# TF Serving's REST mapping (net_http / http_rest_api_handler): gRPC code -> HTTP status.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# tensorflow/core/protobuf/error_codes.proto numbers, as in ModelVersionStatus.status.error_code.
CODE_NUMBER = {code: code.value[0] for code in grpc.StatusCode}
CODE_BY_NUMBER = {number: code for code, number in CODE_NUMBER.items()}


class ServingError(Exception):
    """A request failed with a gRPC status `code` and TF Serving's kind of `message`."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers for this error (or one HTTP has for the case, as
        413 for an oversize body)."""
        return self._http_status or HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    """An INVALID_ARGUMENT error."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """A NOT_FOUND error."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def from_tf_error(error: Exception) -> ServingError:
    """Translate a TensorFlow runtime error (tf.errors.OpError) into a ServingError with its code."""
    code_number = getattr(error, "error_code", None)
    code = CODE_BY_NUMBER.get(code_number, grpc.StatusCode.INTERNAL)
    message = getattr(error, "message", None) or str(error)
    return ServingError(code, message)
