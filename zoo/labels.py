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

# The procedural shapes dataset (pipelines/data/shapes.py): image size, object classes, and the
# segmentation classes (mask pixel value = index, 0 = background).
SHAPES_IMAGE_SIZE = 64
SHAPES_LABELS = ("circle", "square", "triangle")
SHAPES_SEGMENTATION_LABELS = ("background", *SHAPES_LABELS)

# The genres of the plays as the First Folio (1623) groups them: the classes of the plays dataset
# (pipelines/data/plays.py) and of the text classifier.
PLAY_GENRES = ("comedy", "tragedy", "history")
