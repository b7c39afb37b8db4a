"""tfzoo-model-server's entry point: flags -> config files -> ModelServer -> serve until SIGTERM/SIGINT.

    tfzoo-model-server --port=8500 --rest_api_port=8501 --model_name=cnn --model_base_path=/abs/models/cnn
    tfzoo-model-server --rest_api_port=8501 --model_config_file=models/models.config

Flags and config files are checked before TensorFlow is imported, so mistakes fail in well under a second.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from serving import config as config_lib
from serving.server import flags, processes, startup

log = logging.getLogger("tfzoo.serving")

VERSION = "tfzoo-model-server 0.1.0 (TensorFlow Serving API 2.21 compatible)"

# `import tensorflow` imports all of Keras (only to register Keras optimizers for TF2 SavedModels revived
# as Keras objects), and Keras imports these when they are installed (plots, DataFrames, notebooks):
# seconds of start-up that this server never uses. It runs every SavedModel as TF Serving does, a Session
# over its MetaGraph, so no model code can need them here (without Keras: ~0.7 s and ~20 MB less).
UNUSED_OPTIONAL_IMPORTS = ("keras", "matplotlib", "pandas", "IPython")


def skip_unused_imports() -> None:
    """Make the optional imports above fail fast (ImportError), as if the packages were not installed."""
    for name in UNUSED_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; exit 0 after draining."""
    args = flags.parse(argv)
    if args.version:
        print(VERSION)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                        stream=sys.stderr)
    try:
        config = startup.read(args)
    except config_lib.ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    for note in flags.notes(args):
        log.info(note)
    if args.server_processes > 1 and not os.environ.get(processes.PROCESS_ENV):
        return processes.supervise(sys.argv[1:] if argv is None else argv, args.server_processes)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up noise
    skip_unused_imports()
    from serving.server.errors import ServingError
    from serving.server.model_server import ModelServer

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF1 loader deprecation notices
    from serving.server.tensorboard_log import LogdirError

    try:
        server = ModelServer(args, config)
    except (config_lib.ConfigError, LogdirError) as e:  # files read once TensorFlow is loaded
        print(e, file=sys.stderr)
        return 1
    try:
        server.start()
    except (ServingError, OSError, ValueError) as e:
        print(f"Failed to start server. Error: {getattr(e, 'message', e)}", file=sys.stderr)
        server.stop()
        return 1
    done.wait()
    server.stop()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
