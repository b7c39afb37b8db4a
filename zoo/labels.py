"""Label lists shared by zoo entries and dataset builders (one place for each)."""

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The 77 characters of the Shakespeare character corpus (pipelines/data/shakespeare.py), sorted:
# the vocabulary of the character language models, checked against the data by the tests.
SHAKESPEARE_CHARS = tuple("\n !\"&'(),-.12345678:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz{")
